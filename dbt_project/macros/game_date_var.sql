{#- The game_date var as a SQL date literal: YYYY-MM-DD only; unset means today
    in America/Los_Angeles, as for the dispatcher. -#}
{% macro game_date_var() -%}
    {%- set raw = var('game_date', none) -%}
    {%- if raw is none -%}
        {%- set tz = modules.pytz.timezone(var('sla_timezone')) -%}
        {%- set text = modules.datetime.datetime.now(tz).date().isoformat() -%}
    {%- else -%}
        {%- set text = raw | string | trim -%}
    {%- endif -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])', text) -%}
        {{ exceptions.raise_compiler_error(
            "game_date must be a date YYYY-MM-DD, got: " ~ (text | truncate(40))) }}
    {%- endif -%}
    cast('{{ text }}' as date)
{%- endmacro %}
