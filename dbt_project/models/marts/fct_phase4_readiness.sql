with

counts as (

    select * from {{ ref('int_readiness_counts') }}  -- noqa: PRS

),

final as (

    select
        -- key
        game_date,

        -- the schedule: no game, no dispatch (and no alert)
        games_scheduled,
        games_scheduled > 0 as is_game_day,

        -- counts
        players_in_slate,
        players_expected,
        players_in_feature_store,
        players_ready,
        players_expected - players_ready as players_not_ready,
        cast({{ percent('players_ready', 'players_expected') }} as numeric) as ready_pct,

        -- Phase 4
        phase4_completed_at,
        phase4_ready_at,

        -- thresholds, in integer arithmetic so that exactly 80 % is ready
        (
            players_expected > 0
            and players_ready * 100 >= {{ var('ready_pct_threshold') }} * players_expected
        )
        or players_ready >= {{ var('ready_count_threshold') }} as is_ready,
        players_ready < {{ var('critical_ready_count') }} as is_critical,

        -- the thresholds applied, for the messages that quote them
        cast({{ var('ready_pct_threshold') }} as numeric) as ready_pct_threshold,
        cast({{ var('ready_count_threshold') }} as int64) as ready_count_threshold,
        cast({{ var('critical_ready_count') }} as int64) as critical_ready_count

    from counts

)

select * from final
