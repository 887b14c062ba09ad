{#- Generic test, dbt's `relationships` over several columns: every row of the model
    whose key columns are all set has a row in `to` with the same values in
    `field_names` (matched in order); `to_condition` (SQL on `to`'s columns) narrows
    the rows that count. Fails with one row per orphan key. -#}
{% test relationships_composite(model, column_names, to, field_names, to_condition=none) %}
{%- if column_names | length != field_names | length -%}
    {{ exceptions.raise_compiler_error(
        "relationships_composite: column_names and field_names differ in length") }}
{%- endif %}

with child as (

    select distinct {{ column_names | join(', ') }}
    from {{ model }}
    where
        {% for column in column_names -%}
            {{ column }} is not null{{ " and" if not loop.last }}
        {% endfor %}

),

parent as (

    select {{ field_names | join(', ') }}
    from {{ to }}
    {%- if to_condition %}
    where {{ to_condition }}
    {%- endif %}

)

select child.*
from child
where not exists (
    select 1
    from parent
    where
        {% for column in column_names -%}
            parent.{{ field_names[loop.index0] }} = child.{{ column }}{{ " and" if not loop.last }}
        {% endfor %}
)

{% endtest %}
