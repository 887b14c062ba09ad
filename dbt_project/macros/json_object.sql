{#- A JSON object as compact text, keys in the order given: pairs is a list of
    (key, SQL expression). Both warehouses render the same text. -#}
{% macro json_object(pairs) -%}
    {{ return(adapter.dispatch('json_object', 'nba_dispatch')(pairs)) }}
{%- endmacro %}

{% macro default__json_object(pairs) -%}
    to_json_string(struct(
        {%- for key, expression in pairs %}
        {{ expression }} as {{ key }}{{ "," if not loop.last }}
        {%- endfor %}
    ))
{%- endmacro %}

{% macro duckdb__json_object(pairs) -%}
    cast(json_object(
        {%- for key, expression in pairs %}
        '{{ key }}', {{ expression }}{{ "," if not loop.last }}
        {%- endfor %}
    ) as string)
{%- endmacro %}

{#- A nullable number as a JSON-ready array of floats: [x], or [] when null. -#}
{% macro float_array_or_empty(expression) -%}
    {{ return(adapter.dispatch('float_array_or_empty', 'nba_dispatch')(expression)) }}
{%- endmacro %}

{% macro default__float_array_or_empty(expression) -%}
    if({{ expression }} is null, cast([] as array<float64>), [cast({{ expression }} as float64)])
{%- endmacro %}

{#- `* 1e0` makes a DuckDB DECIMAL a DOUBLE (21.500 -> 21.5 in JSON); a cast to double
    would not parse as BigQuery, the dialect the SQL is linted in. -#}
{% macro duckdb__float_array_or_empty(expression) -%}
    case
        when {{ expression }} is null then []
        else [{{ expression }} * 1e0]
    end
{%- endmacro %}
