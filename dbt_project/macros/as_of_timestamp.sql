{#- "Now" as a UTC timestamp; var as_of pins it for unit tests and replays. -#}
{% macro as_of_timestamp() -%}
    {%- if var('as_of', none) -%}
        cast('{{ var("as_of") }}' as {{ dbt.type_timestamp() }})
    {%- else -%}
        {{ return(adapter.dispatch('current_utc_timestamp', 'nba_dispatch')()) }}
    {%- endif -%}
{%- endmacro %}

{% macro default__current_utc_timestamp() -%}
    current_timestamp()
{%- endmacro %}

{#- DuckDB timestamps here are naive UTC; its clock is zone-aware. -#}
{% macro duckdb__current_utc_timestamp() -%}
    timezone('UTC', current_timestamp)
{%- endmacro %}
