{#- The game_date var as a SQL date literal: a real calendar date YYYY-MM-DD only (no
    2026-02-30, no 2026-13-01); unset means today in America/Los_Angeles, as for the
    dispatcher. A bad value fails compilation with one line naming the var and the value. -#}
{% macro game_date_var() -%}
    {%- set raw = var('game_date', none) -%}
    {%- if raw is none -%}
        {%- set tz = modules.pytz.timezone(var('sla_timezone')) -%}
        {%- set text = modules.datetime.datetime.now(tz).date().isoformat() -%}
    {%- else -%}
        {%- set text = raw | string | trim -%}
    {%- endif -%}
    {%- set match = modules.re.fullmatch('([0-9]{4})-([0-9]{2})-([0-9]{2})', text) -%}
    {%- set valid = false -%}
    {%- if match -%}
        {%- set year = match.group(1) | int -%}
        {%- set month = match.group(2) | int -%}
        {%- set day = match.group(3) | int -%}
        {%- set leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 -%}
        {%- set month_days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] -%}
        {%- set valid = year >= 1 and 1 <= month <= 12 and 1 <= day <= month_days[month - 1] -%}
    {%- endif -%}
    {%- if not valid -%}
        {{ exceptions.raise_compiler_error(
            "game_date must be a calendar date YYYY-MM-DD, got: " ~ (text | truncate(40))) }}
    {%- endif -%}
    cast('{{ text }}' as date)
{%- endmacro %}
