{#- timestamp + N minutes, staying a TIMESTAMP (dbt.dateadd yields DATETIME on BigQuery). -#}
{% macro timestamp_add_minutes(timestamp_expr, minutes) -%}
    {{ return(adapter.dispatch('timestamp_add_minutes', 'nba_dispatch')(timestamp_expr, minutes)) }}
{%- endmacro %}

{% macro default__timestamp_add_minutes(timestamp_expr, minutes) -%}
    {{ dbt.dateadd('minute', minutes, timestamp_expr) }}
{%- endmacro %}

{% macro bigquery__timestamp_add_minutes(timestamp_expr, minutes) -%}
    timestamp_add({{ timestamp_expr }}, interval {{ minutes }} minute)
{%- endmacro %}
