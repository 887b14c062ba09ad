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

{#- timestamp + N seconds, staying a TIMESTAMP. -#}
{% macro timestamp_add_seconds(timestamp_expr, seconds) -%}
    {{ return(adapter.dispatch('timestamp_add_seconds', 'nba_dispatch')(timestamp_expr, seconds)) }}
{%- endmacro %}

{% macro default__timestamp_add_seconds(timestamp_expr, seconds) -%}
    {{ dbt.dateadd('second', seconds, timestamp_expr) }}
{%- endmacro %}

{% macro bigquery__timestamp_add_seconds(timestamp_expr, seconds) -%}
    timestamp_add({{ timestamp_expr }}, interval {{ seconds }} second)
{%- endmacro %}
