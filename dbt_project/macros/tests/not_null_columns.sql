{#- Generic test: none of the columns is null. One query for them all, where a
    not_null test per column reads the model once per column (and a mart over views
    reads everything below it each time). Fails with the offending rows. -#}
{% test not_null_columns(model, column_names) %}

select *
from {{ model }}
where
    {% for column in column_names -%}
        {{ column }} is null{% if not loop.last %} or {% endif %}
    {% endfor %}

{% endtest %}
