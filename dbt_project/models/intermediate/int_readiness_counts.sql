{#- Per game date: the Phase 4 counts the readiness thresholds are applied to.
    Built as one union of per-source aggregates grouped by game_date (no joins), so
    that a filter on game_date reaches every source table: one date stays cheap
    however many seasons the tables hold. -#}
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

game_days as (

    select * from {{ ref('int_game_days') }}  -- noqa: PRS

),

-- Expected players, with the order in which Phase 4 made them ready.
expected_players as (

    select
        game_date,
        has_features,
        is_ready,
        features_updated_at,
        count(*) over (partition by game_date) as players_expected,
        row_number() over (
            partition by game_date, is_ready
            order by features_updated_at
        ) as ready_rank
    from dispatch_state

),

per_source as (

    select
        game_date,
        0 as games_scheduled,
        count(*) as players_in_slate,
        0 as players_expected,
        0 as players_in_feature_store,
        0 as players_ready,
        cast(null as timestamp) as phase4_ready_at,
        cast(null as timestamp) as phase4_completed_at
    from slate
    group by game_date

    union all

    -- The date became ready with the write that brought the needed ready player:
    -- the lower of the count threshold and the share threshold of the expected.
    select
        game_date,
        0 as games_scheduled,
        0 as players_in_slate,
        count(*) as players_expected,
        count(case when has_features then 1 end) as players_in_feature_store,
        count(case when is_ready then 1 end) as players_ready,
        min(
            case
                when
                    is_ready
                    and least(
                        {{ var('ready_count_threshold') }},
                        cast(
                            ceil({{ var('ready_pct_threshold') }} * players_expected / 100.0)
                            as int64
                        )
                    ) <= ready_rank
                    then features_updated_at
            end
        ) as phase4_ready_at,
        cast(null as timestamp) as phase4_completed_at
    from expected_players
    group by game_date

    union all

    select
        game_date,
        0 as games_scheduled,
        0 as players_in_slate,
        0 as players_expected,
        0 as players_in_feature_store,
        0 as players_ready,
        cast(null as timestamp) as phase4_ready_at,
        max(features_updated_at) as phase4_completed_at
    from features
    group by game_date

    union all

    select
        game_date,
        games_scheduled,
        0 as players_in_slate,
        0 as players_expected,
        0 as players_in_feature_store,
        0 as players_ready,
        cast(null as timestamp) as phase4_ready_at,
        cast(null as timestamp) as phase4_completed_at
    from game_days

),

final as (

    select
        game_date,
        cast(sum(games_scheduled) as int64) as games_scheduled,
        cast(sum(players_in_slate) as int64) as players_in_slate,
        cast(sum(players_expected) as int64) as players_expected,
        cast(sum(players_in_feature_store) as int64) as players_in_feature_store,
        cast(sum(players_ready) as int64) as players_ready,
        max(phase4_completed_at) as phase4_completed_at,
        max(phase4_ready_at) as phase4_ready_at
    from per_source
    group by game_date
    -- dates with a Phase 3 slate or a game on the schedule: a game day without a
    -- slate is a row of zeros (critical), a date with neither has no row (no games)
    having sum(players_in_slate) > 0 or sum(games_scheduled) > 0

)

select * from final
