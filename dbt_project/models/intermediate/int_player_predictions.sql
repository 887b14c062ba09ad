{#- Per player and date: how many required systems have an active prediction. -#}
{%- set required_systems = var('required_systems') %}

with

predictions as (

    select * from {{ ref('stg_nba_predictions__player_prop_predictions') }}  -- noqa: PRS

),

required as (

    select *
    from predictions
    where
        is_active
        and system_id in {{ sql_string_list(required_systems) }}

),

final as (

    select
        game_date,
        player_lookup,
        count(distinct system_id) as systems_predicted,
        count(distinct system_id) = {{ required_systems | length }} as is_predicted,
        min(created_at) as first_predicted_at,
        max(created_at) as last_predicted_at
    from required
    group by game_date, player_lookup

)

select * from final
