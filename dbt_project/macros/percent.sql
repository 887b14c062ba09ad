{#- 100 * part / whole rounded to 2 places; null when whole is 0. -#}
{% macro percent(part, whole) -%}
    round(
        100.0 * {{ part }} / nullif({{ whole }}, 0),
        2
    )
{%- endmacro %}
