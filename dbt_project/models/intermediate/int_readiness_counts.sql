{#- Per game date: the Phase 4 counts the readiness thresholds are applied to. -#}
with

slate as (

    select * from {{ ref('int_slate_players') }}  -- noqa: PRS

),

dispatch_state as (

    select * from {{ ref('int_player_dispatch_state') }}  -- noqa: PRS

),

features as (

    select * from {{ ref('int_player_features') }}  -- noqa: PRS

),

dates as (

    select
        game_date,
        count(*) as players_in_slate
    from slate
    group by game_date

),

expected as (

    select
        game_date,
        count(*) as players_expected,
        count(case when has_features then 1 end) as players_in_feature_store,
        count(case when is_ready then 1 end) as players_ready
    from dispatch_state
    group by game_date

),

phase4 as (

    select
        game_date,
        max(features_updated_at) as phase4_completed_at
    from features
    group by game_date

),

final as (

    select
        dates.game_date,
        dates.players_in_slate,
        coalesce(expected.players_expected, 0) as players_expected,
        coalesce(expected.players_in_feature_store, 0) as players_in_feature_store,
        coalesce(expected.players_ready, 0) as players_ready,
        phase4.phase4_completed_at
    from dates
    left join expected on dates.game_date = expected.game_date
    left join phase4 on dates.game_date = phase4.game_date

)

select * from final
