{#- Tables this project writes are partitioned by game_date where the warehouse
    partitions (BigQuery); DuckDB needs nothing. -#}
{% macro partition_by_game_date() -%}
    {{ return(adapter.dispatch('partition_by_game_date', 'nba_dispatch')()) }}
{%- endmacro %}

{% macro default__partition_by_game_date() -%}
    {{ return(none) }}
{%- endmacro %}

{% macro bigquery__partition_by_game_date() -%}
    {{ return({'field': 'game_date', 'data_type': 'date'}) }}
{%- endmacro %}
