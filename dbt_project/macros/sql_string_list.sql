{#- A list var as a SQL list of quoted literals: ('A', 'B'). An empty list renders
    (null), which matches nothing, since `in ()` is a syntax error in both warehouses
    (e.g. --vars '{excluded_player_statuses: []}' excludes nobody). -#}
{% macro sql_string_list(values) -%}
    {%- if values | length == 0 -%}
        (null)
    {%- else -%}
        ({%- for value in values -%}
            '{{ value | replace("'", "''") }}'{{ ", " if not loop.last }}
        {%- endfor -%})
    {%- endif -%}
{%- endmacro %}
