{#- Generic test, the project's one primary-key test: the columns identify a row.
    Fails with one row per offending key: a key some column of which is null, or a
    key more than one row holds (n_rows says how many). -#}
{% test primary_key(model, column_names) %}
{%- set columns = [column_names] if column_names is string else column_names -%}

select
    {% for column in columns -%}
        {{ column }},
    {% endfor -%}
    count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having
    count(*) > 1
    {%- for column in columns %}
    or {{ column }} is null
    {%- endfor %}

{% endtest %}
