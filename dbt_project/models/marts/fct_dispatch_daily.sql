{#- One row per game day: what analysts and on-call read first. Readiness, coverage,
    latency and the SLA as the other marts decide them; runs and alerts from the
    tables the dispatcher writes; and whether the day was a success. -#}
with

coverage as (

    select * from {{ ref('fct_prediction_coverage') }}  -- noqa: PRS

),

readiness as (

    select * from {{ ref('fct_phase4_readiness') }}  -- noqa: PRS

),

latency as (

    select * from {{ ref('fct_dispatch_latency') }}  -- noqa: PRS

),

dispatch_state as (

    select * from {{ ref('int_player_dispatch_state') }}  -- noqa: PRS

),

runs as (

    select * from {{ ref('dispatch_runs') }}  -- noqa: PRS

),

alerts as (

    select * from {{ ref('alert_log') }}  -- noqa: PRS

),

feature_quality as (

    select
        game_date,
        avg(feature_quality_score) as avg_feature_quality_score
    from dispatch_state
    where has_features
    group by game_date

),

run_counts as (

    select
        game_date,
        count(*) as runs,
        count(case when trigger_source = 'pubsub' then 1 end) as runs_pubsub,
        count(case when trigger_source = 'scheduler' then 1 end) as runs_scheduler,
        count(case when trigger_source = 'manual' then 1 end) as runs_manual,
        count(case when trigger_source = 'backfill' then 1 end) as runs_backfill,
        count(
            case
                when
                    trigger_source is null
                    or trigger_source not in ('pubsub', 'scheduler', 'manual', 'backfill')
                    then 1
            end
        ) as runs_other,
        count(case when exit_code = 1 then 1 end) as runs_failed,
        sum(requests_published) as requests_published
    from runs
    group by game_date

),

-- One alert is what one run raised for a rule at a level: its rows per channel
-- count once. A row written before alert_log had a kind is a new alert.
sent_alerts as (

    select
        game_date,
        level,
        concat(
            coalesce(run_id, ''), '/', coalesce(rule, ''), '/',
            coalesce(level, ''), '/', coalesce(kind, 'new')
        ) as alert_key
    from alerts
    where
        status = 'sent'
        and coalesce(kind, 'new') != 'resolved'

),

alert_counts as (

    select
        game_date,
        count(distinct alert_key) as alerts_sent,
        count(distinct case when level = 'critical' then alert_key end)
            as critical_alerts_sent
    from sent_alerts
    group by game_date

),

joined as (

    select
        coverage.game_date,
        coverage.games_scheduled,
        coverage.players_expected,
        coverage.players_ready,
        readiness.ready_pct,
        feature_quality.avg_feature_quality_score,
        coverage.players_predicted,
        coverage.players_missing,
        coverage.coverage_pct,
        readiness.phase4_ready_at,
        latency.first_requested_at,
        latency.first_trigger_source,
        latency.minutes_to_first_request,
        latency.last_predicted_at,
        latency.sla_deadline_at,
        latency.is_sla_met,
        {{ dbt.datediff('readiness.phase4_ready_at', 'latency.first_requested_at', 'second') }}
            as seconds_to_first_request,
        coalesce(run_counts.runs, 0) as runs,
        coalesce(run_counts.runs_pubsub, 0) as runs_pubsub,
        coalesce(run_counts.runs_scheduler, 0) as runs_scheduler,
        coalesce(run_counts.runs_manual, 0) as runs_manual,
        coalesce(run_counts.runs_backfill, 0) as runs_backfill,
        coalesce(run_counts.runs_other, 0) as runs_other,
        coalesce(run_counts.runs_failed, 0) as runs_failed,
        coalesce(run_counts.requests_published, 0) as requests_published,
        coalesce(alert_counts.alerts_sent, 0) as alerts_sent,
        coalesce(alert_counts.critical_alerts_sent, 0) as critical_alerts_sent
    from coverage
    inner join readiness on coverage.game_date = readiness.game_date
    inner join latency on coverage.game_date = latency.game_date
    left join feature_quality on coverage.game_date = feature_quality.game_date
    left join run_counts on coverage.game_date = run_counts.game_date
    left join alert_counts on coverage.game_date = alert_counts.game_date
    where coverage.is_game_day

),

measured as (

    select
        *,
        -- integer arithmetic, so that exactly 95 % is met
        players_expected > 0
        and players_predicted * 100
        >= {{ var('success_coverage_pct') }} * players_expected as is_coverage_met,
        -- no acknowledged request (or never ready): not met
        coalesce(
            seconds_to_first_request <= {{ var('success_latency_minutes') }} * 60, false
        ) as is_latency_met
    from joined

),

final as (

    select
        -- key
        game_date,

        -- Phase 4
        games_scheduled,
        players_expected,
        players_ready,
        ready_pct,
        cast(round(avg_feature_quality_score, 2) as numeric) as avg_feature_quality_score,
        phase4_ready_at,

        -- coverage and the SLA
        players_predicted,
        players_missing,
        coverage_pct,
        last_predicted_at,
        sla_deadline_at,
        is_sla_met,

        -- latency
        first_requested_at,
        first_trigger_source,
        minutes_to_first_request,

        -- the run log
        cast(runs as int64) as runs,
        cast(runs_pubsub as int64) as runs_pubsub,
        cast(runs_scheduler as int64) as runs_scheduler,
        cast(runs_manual as int64) as runs_manual,
        cast(runs_backfill as int64) as runs_backfill,
        cast(runs_other as int64) as runs_other,
        cast(runs_failed as int64) as runs_failed,
        cast(requests_published as int64) as requests_published,

        -- alerts
        cast(alerts_sent as int64) as alerts_sent,
        cast(critical_alerts_sent as int64) as critical_alerts_sent,

        -- success
        is_coverage_met,
        is_latency_met,
        is_coverage_met and is_latency_met as is_success,

        -- the thresholds applied, for the messages that quote them
        cast({{ var('success_coverage_pct') }} as numeric) as success_coverage_pct,
        cast({{ var('success_latency_minutes') }} as int64) as success_latency_minutes

    from measured

)

select * from final
