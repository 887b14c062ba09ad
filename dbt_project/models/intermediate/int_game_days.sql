{#- One row per date with at least one game on the NBA schedule: a game day. -#}
with

schedule as (

    select * from {{ ref('stg_nba_raw__nbac_schedule') }}  -- noqa: PRS

),

final as (

    select
        game_date,
        count(distinct game_id) as games_scheduled,
        count(distinct case when game_status = 3 then game_id end) as games_final
    from schedule
    group by game_date

)

select * from final
