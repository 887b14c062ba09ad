{#- The prediction request id, deterministic for (game_date, player, attempt) so that
    consumers drop duplicates. Its one definition: the dispatcher claims the
    next_request_id the dispatch-state mart computes with it. -#}
{% macro request_id(game_date, player_lookup, attempt) -%}
    concat(
        cast({{ game_date }} as string), '/', {{ player_lookup }}, '/',
        cast({{ attempt }} as string)
    )
{%- endmacro %}
