{#- A wall-clock time on a date in a named zone, as a UTC timestamp (DST-safe). -#}
{% macro local_time_to_utc(date_expr, local_time, tz) -%}
    {{ return(adapter.dispatch('local_time_to_utc', 'nba_dispatch')(date_expr, local_time, tz)) }}
{%- endmacro %}

{% macro default__local_time_to_utc(date_expr, local_time, tz) -%}
    timestamp(datetime({{ date_expr }}, time '{{ local_time }}'), '{{ tz }}')
{%- endmacro %}

{% macro duckdb__local_time_to_utc(date_expr, local_time, tz) -%}
    timezone(
        'UTC',
        timezone('{{ tz }}', cast({{ date_expr }} as date) + time '{{ local_time }}')
    )
{%- endmacro %}
