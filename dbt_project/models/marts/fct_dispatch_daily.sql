{#- One row per game day: what analysts and on-call read first. Readiness from
    fct_phase4_readiness; coverage, latency and the SLA by the definitions of
    fct_prediction_coverage and fct_dispatch_latency, computed here from the dispatch
    state and the ledger rather than read from those marts, which stack the same views
    again (a warehouse expands every view it reads: built on them, this view would
    evaluate the dispatch state eight times, built like this twice);
    tests/test_monitoring.py holds the columns equal. Runs and alerts come from the
    tables the dispatcher writes. -#}
with

readiness as (

    select * from {{ ref('fct_phase4_readiness') }}  -- noqa: PRS

),

dispatch_state as (

    select * from {{ ref('int_player_dispatch_state') }}  -- noqa: PRS

),

ledger as (

    select * from {{ ref('request_ledger') }}  -- noqa: PRS

),

runs as (

    select * from {{ ref('dispatch_runs') }}  -- noqa: PRS

),

alerts as (

    select * from {{ ref('alert_log') }}  -- noqa: PRS

),

-- fct_prediction_coverage's counts and fct_dispatch_latency's last prediction
state_counts as (

    select
        game_date,
        count(case when state = 'predicted' then 1 end) as players_predicted,
        count(case when state = 'in_flight' then 1 end) as players_in_flight,
        max(case when is_predicted then last_predicted_at end) as last_predicted_at,
        sum(case when has_features then feature_quality_score end) as feature_quality_sum,
        count(case when has_features then feature_quality_score end) as feature_rows
    from dispatch_state
    group by game_date

),

-- fct_dispatch_latency's first acknowledged request
first_request as (

    select
        game_date,
        published_at as first_requested_at,
        trigger_source as first_trigger_source,
        row_number() over (
            partition by game_date
            order by published_at, request_id
        ) as row_num
    from ledger
    where published_at is not null

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
        readiness.game_date,
        readiness.games_scheduled,
        readiness.players_expected,
        readiness.players_ready,
        readiness.ready_pct,
        readiness.phase4_ready_at,
        state_counts.feature_quality_sum,
        state_counts.feature_rows,
        coalesce(state_counts.players_predicted, 0) as players_predicted,
        coalesce(state_counts.players_in_flight, 0) as players_in_flight,
        state_counts.last_predicted_at,
        first_request.first_requested_at,
        first_request.first_trigger_source,
        {{ local_time_to_utc('readiness.game_date', var('sla_local_time'), var('sla_timezone')) }}
            as sla_deadline_at,
        {{ dbt.datediff('readiness.phase4_ready_at', 'first_request.first_requested_at',
                        'second') }} as seconds_to_first_request,
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
    from readiness
    left join state_counts on readiness.game_date = state_counts.game_date
    left join first_request
        on
            readiness.game_date = first_request.game_date
            and first_request.row_num = 1
    left join run_counts on readiness.game_date = run_counts.game_date
    left join alert_counts on readiness.game_date = alert_counts.game_date
    where readiness.is_game_day

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
        -- an average rounded in hundredths from the exact sum, so that a half rounds
        -- alike everywhere (DuckDB averages decimals as doubles)
        cast(round(feature_quality_sum * 100 / nullif(feature_rows, 0)) / 100 as numeric)
            as avg_feature_quality_score,
        phase4_ready_at,

        -- coverage and the SLA, as fct_prediction_coverage and fct_dispatch_latency
        players_predicted,
        players_expected - players_predicted - players_in_flight as players_missing,
        cast({{ percent('players_predicted', 'players_expected') }} as numeric)
            as coverage_pct,
        last_predicted_at,
        sla_deadline_at,
        players_expected > 0
        and players_predicted = players_expected
        and last_predicted_at <= sla_deadline_at as is_sla_met,

        -- latency, as fct_dispatch_latency
        first_requested_at,
        first_trigger_source,
        cast(round(seconds_to_first_request / 60.0, 1) as numeric) as minutes_to_first_request,

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
