with

dispatch_state as (

    select * from {{ ref('int_player_dispatch_state') }}  -- noqa: PRS

),

readiness as (

    select * from {{ ref('fct_phase4_readiness') }}  -- noqa: PRS

),

counted as (

    select
        game_date,
        count(*) as players_expected,
        count(case when is_ready then 1 end) as players_ready,
        count(case when state = 'predicted' then 1 end) as players_predicted,
        count(case when state = 'in_flight' then 1 end) as players_in_flight,
        count(case when state = 'pending' then 1 end) as players_pending,
        count(case when state = 'not_ready' then 1 end) as players_not_ready,
        count(case when state = 'in_flight' and is_claim_unconfirmed then 1 end)
            as players_claimed,
        max(case when state = 'in_flight' and is_claim_unconfirmed then claim_expires_at end)
            as claims_expire_at
    from dispatch_state
    group by game_date

),

joined as (

    select
        readiness.game_date,
        readiness.games_scheduled,
        readiness.is_game_day,
        coalesce(counted.players_expected, 0) as players_expected,
        coalesce(counted.players_ready, 0) as players_ready,
        coalesce(counted.players_predicted, 0) as players_predicted,
        coalesce(counted.players_in_flight, 0) as players_in_flight,
        coalesce(counted.players_pending, 0) as players_pending,
        coalesce(counted.players_not_ready, 0) as players_not_ready,
        coalesce(counted.players_claimed, 0) as players_claimed,
        counted.claims_expire_at,
        readiness.is_ready as is_phase4_ready,
        readiness.is_critical as is_phase4_critical,
        readiness.critical_ready_count
    from readiness
    left join counted on readiness.game_date = counted.game_date

),

final as (

    select
        -- key
        game_date,

        -- the schedule
        games_scheduled,
        is_game_day,

        -- counts
        players_expected,
        players_ready,
        players_predicted,
        players_in_flight,
        players_pending,
        players_not_ready,
        players_expected - players_predicted - players_in_flight as players_missing,
        -- of the in-flight, those held only by a claim not confirmed yet, and when the
        -- last of those claims ends
        players_claimed,
        claims_expire_at,

        -- Phase 4, as fct_phase4_readiness decides it
        is_phase4_ready,
        is_phase4_critical,
        critical_ready_count,

        -- coverage
        cast({{ percent('players_predicted', 'players_expected') }} as numeric)
            as coverage_pct,
        (
            (players_expected - players_predicted - players_in_flight) * 100
            > {{ var('missing_warning_pct') }} * players_expected
        )
        or players_expected - players_predicted - players_in_flight
        > {{ var('missing_warning_count') }} as is_missing_warning,
        case
            -- no game, nothing to cover: never an alert
            when not is_game_day then 'ok'
            when players_predicted = 0 then 'critical'
            when
                players_predicted * 100
                < {{ var('coverage_critical_pct') }} * players_expected
                then 'critical'
            when
                players_predicted * 100
                < {{ var('coverage_warning_pct') }} * players_expected
                then 'warning'
            else 'ok'
        end as alert_level,

        -- the thresholds applied, for the messages that quote them
        cast({{ var('missing_warning_pct') }} as numeric) as missing_warning_pct,
        cast({{ var('missing_warning_count') }} as int64) as missing_warning_count,
        cast({{ var('coverage_warning_pct') }} as numeric) as coverage_warning_pct,
        cast({{ var('coverage_critical_pct') }} as numeric) as coverage_critical_pct

    from joined

)

select * from final
