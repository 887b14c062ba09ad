{#- Schemas are the datasets named by the contract (nba_orchestration, ...), not target-prefixed. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ (custom_schema_name or target.schema) | trim }}
{%- endmacro %}
