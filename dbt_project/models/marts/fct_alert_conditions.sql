{#- The alert rules, decided here: one row per game date and rule with its level now
    (ok, warning or critical) and the figures its message quotes. alerts/ turns the
    rows into messages and the dedup state of alert_log decides what is sent; which
    command asks for which rule is alerts.rules' table. publish_failed is not here:
    it is a fact of one run (its failed publishes), not of the warehouse. -#}
with

readiness as (

    select * from {{ ref('fct_phase4_readiness') }}  -- noqa: PRS

),

coverage as (

    select * from {{ ref('fct_prediction_coverage') }}  -- noqa: PRS

),

latency as (

    select * from {{ ref('fct_dispatch_latency') }}  -- noqa: PRS

),

days as (

    select
        coverage.game_date,
        coverage.is_game_day,
        coverage.games_scheduled,
        coverage.players_expected,
        coverage.players_ready,
        coverage.players_predicted,
        coverage.players_in_flight,
        coverage.players_missing,
        coverage.coverage_pct,
        coverage.is_phase4_critical,
        coverage.is_missing_warning,
        coverage.alert_level as coverage_level,
        coverage.critical_ready_count,
        coverage.missing_warning_pct,
        coverage.missing_warning_count,
        coverage.coverage_warning_pct,
        coverage.coverage_critical_pct,
        readiness.ready_pct,
        latency.latency_alert_level,
        latency.minutes_waited,
        latency.latency_warning_minutes,
        latency.latency_critical_minutes,
        latency.first_requested_at,
        latency.phase4_ready_at,
        latency.sla_deadline_at,
        coalesce(latency.is_sla_met, false) as is_sla_met,
        {{ as_of_timestamp() }} > latency.sla_deadline_at as is_past_sla_deadline
    from coverage
    inner join readiness on coverage.game_date = readiness.game_date
    inner join latency on coverage.game_date = latency.game_date

),

phase4_critical as (

    select
        game_date,
        'phase4_critical' as rule,
        case when is_game_day and is_phase4_critical then 'critical' else 'ok' end as level,
        cast(players_ready as numeric) as observed,
        cast(null as numeric) as warning_threshold,
        cast(critical_ready_count as numeric) as critical_threshold
    from days

),

partial_dispatch as (

    select
        game_date,
        'partial_dispatch' as rule,
        case when is_game_day and is_missing_warning then 'warning' else 'ok' end as level,
        cast(players_missing as numeric) as observed,
        cast(missing_warning_count as numeric) as warning_threshold,
        cast(null as numeric) as critical_threshold
    from days

),

coverage_rule as (

    select
        game_date,
        'coverage' as rule,
        coverage_level as level,
        cast(coverage_pct as numeric) as observed,
        cast(coverage_warning_pct as numeric) as warning_threshold,
        cast(coverage_critical_pct as numeric) as critical_threshold
    from days

),

latency_rule as (

    select
        game_date,
        'latency' as rule,
        case when is_game_day then latency_alert_level else 'ok' end as level,
        cast(minutes_waited as numeric) as observed,
        cast(latency_warning_minutes as numeric) as warning_threshold,
        cast(latency_critical_minutes as numeric) as critical_threshold
    from days

),

sla_missed as (

    select
        game_date,
        'sla_missed' as rule,
        case
            -- a coverage breach says it already: this is the shortfall it lets pass
            when
                is_game_day and is_past_sla_deadline and not is_sla_met
                and coverage_level = 'ok'
                then 'warning'
            else 'ok'
        end as level,
        cast(players_predicted as numeric) as observed,
        cast(players_expected as numeric) as warning_threshold,
        cast(null as numeric) as critical_threshold
    from days

),

rules as (

    select * from phase4_critical
    union all
    select * from partial_dispatch
    union all
    select * from coverage_rule
    union all
    select * from latency_rule
    union all
    select * from sla_missed

),

final as (

    select
        -- key
        rules.game_date,
        rules.rule,

        -- the decision
        rules.level,
        rules.observed,
        rules.warning_threshold,
        rules.critical_threshold,

        -- the figures the messages quote
        days.is_game_day,
        days.games_scheduled,
        days.players_expected,
        days.players_ready,
        days.players_predicted,
        days.players_in_flight,
        days.players_missing,
        days.coverage_pct,
        days.ready_pct,
        days.missing_warning_pct,
        days.phase4_ready_at,
        days.first_requested_at,
        days.sla_deadline_at

    from rules
    inner join days on rules.game_date = days.game_date

)

select * from final
