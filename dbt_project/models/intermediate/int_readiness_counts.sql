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

-- Ready players in the order Phase 4 made them ready.
ready_ordered as (

    select
        game_date,
        features_updated_at,
        row_number() over (
            partition by game_date
            order by features_updated_at
        ) as ready_rank
    from dispatch_state
    where is_ready

),

-- How many ready players make the date ready: the lower of the count threshold and
-- the share threshold of the expected players.
ready_needed as (

    select
        game_date,
        least(
            {{ var('ready_count_threshold') }},
            cast(ceil({{ var('ready_pct_threshold') }} * players_expected / 100.0) as int64)
        ) as players_needed
    from expected

),

-- When the date became ready: the write that brought the needed player.
ready_at as (

    select
        ready_needed.game_date,
        min(ready_ordered.features_updated_at) as phase4_ready_at
    from ready_needed
    inner join ready_ordered
        on
            ready_needed.game_date = ready_ordered.game_date
            and ready_needed.players_needed <= ready_ordered.ready_rank
    where ready_needed.players_needed > 0
    group by ready_needed.game_date

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
        phase4.phase4_completed_at,
        ready_at.phase4_ready_at
    from dates
    left join expected on dates.game_date = expected.game_date
    left join phase4 on dates.game_date = phase4.game_date
    left join ready_at on dates.game_date = ready_at.game_date

)

select * from final
