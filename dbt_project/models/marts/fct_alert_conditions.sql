{#- The alert rules, decided here: one row per game date and rule with its level now
    (ok, warning or critical) and the figures its message quotes. alerts/ turns the
    rows into messages and the dedup state of alert_log decides what is sent; which
    command asks for which rule is alerts.rules' table. publish_failed is not here:
    it is a fact of one run (its failed publishes), not of the warehouse. -#}
with

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
    inner join latency on coverage.game_date = latency.game_date

),

-- The rules as rows, so that each date is read once and fanned out (a union of one
-- select per rule reads the marts once per rule).
rules as (

    select 'phase4_critical' as rule
    union all
    select 'partial_dispatch' as rule
    union all
    select 'coverage' as rule
    union all
    select 'latency' as rule
    union all
    select 'sla_missed' as rule

),

judged as (

    select
        days.*,
        rules.rule,
        case
            when not days.is_game_day then 'ok'
            when rules.rule = 'phase4_critical'
                then case when days.is_phase4_critical then 'critical' else 'ok' end
            when rules.rule = 'partial_dispatch'
                then case when days.is_missing_warning then 'warning' else 'ok' end
            when rules.rule = 'coverage' then days.coverage_level
            when rules.rule = 'latency' then days.latency_alert_level
            -- sla_missed: a coverage breach says it already; this is the shortfall
            -- the coverage line lets pass
            when
                days.is_past_sla_deadline and not days.is_sla_met
                and days.coverage_level = 'ok'
                then 'warning'
            else 'ok'
        end as level,
        case rules.rule
            when 'phase4_critical' then days.players_ready
            when 'partial_dispatch' then days.players_missing
            when 'coverage' then days.coverage_pct
            when 'latency' then days.minutes_waited
            else days.players_predicted
        end as observed,
        case rules.rule
            when 'partial_dispatch' then days.missing_warning_count
            when 'coverage' then days.coverage_warning_pct
            when 'latency' then days.latency_warning_minutes
            when 'sla_missed' then days.players_expected
        end as warning_threshold,
        case rules.rule
            when 'phase4_critical' then days.critical_ready_count
            when 'coverage' then days.coverage_critical_pct
            when 'latency' then days.latency_critical_minutes
        end as critical_threshold
    from days
    cross join rules

),

final as (

    select
        -- key
        game_date,
        rule,

        -- the decision
        level,
        cast(observed as numeric) as observed,
        cast(warning_threshold as numeric) as warning_threshold,
        cast(critical_threshold as numeric) as critical_threshold,

        -- the figures the messages quote
        is_game_day,
        games_scheduled,
        players_expected,
        players_ready,
        players_predicted,
        players_in_flight,
        players_missing,
        coverage_pct,
        missing_warning_pct,
        phase4_ready_at,
        first_requested_at,
        sla_deadline_at

    from judged

)

select * from final
