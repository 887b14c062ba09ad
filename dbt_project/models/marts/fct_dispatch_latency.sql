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

-- Counted here rather than read from fct_prediction_coverage (the same counts of the
-- same model): a view over fewer views is much cheaper to expand.
predictions as (

    select
        game_date,
        count(*) as players_expected,
        count(case when is_predicted then 1 end) as players_predicted,
        max(case when is_predicted then last_predicted_at end) as last_predicted_at
    from dispatch_state
    group by game_date

),

joined as (

    select
        readiness.game_date,
        readiness.phase4_completed_at,
        readiness.phase4_ready_at,
        first_request.first_requested_at,
        first_request.first_trigger_source,
        predictions.last_predicted_at,
        coalesce(predictions.players_expected, 0) as players_expected,
        coalesce(predictions.players_predicted, 0) as players_predicted,
        coalesce(
            predictions.players_expected > 0
            and predictions.players_predicted = predictions.players_expected,
            false
        ) as is_complete,
        {{ local_time_to_utc('readiness.game_date', var('sla_local_time'), var('sla_timezone')) }}
            as sla_deadline_at,
        {{ dbt.datediff('readiness.phase4_ready_at',
                        'coalesce(first_request.first_requested_at, ' ~ as_of_timestamp() ~ ')',
                        'second') }} / 60.0 as minutes_waited
    from readiness
    left join first_request
        on
            readiness.game_date = first_request.game_date
            and first_request.row_num = 1
    left join predictions on readiness.game_date = predictions.game_date

),

final as (

    select
        -- key
        game_date,

        -- milestones (UTC)
        phase4_completed_at,
        phase4_ready_at,
        first_requested_at,
        last_predicted_at,
        sla_deadline_at,

        -- who dispatched first
        first_trigger_source,

        -- durations in minutes
        cast(round(
            {{ dbt.datediff('phase4_ready_at', 'first_requested_at', 'second') }}
            / 60.0,
            1
        ) as numeric) as minutes_to_first_request,
        cast(round(
            {{ dbt.datediff('phase4_ready_at', 'last_predicted_at', 'second') }}
            / 60.0,
            1
        ) as numeric) as minutes_to_last_prediction,

        -- the latency the alert judges: to the first request, or to now while none
        cast(round(minutes_waited, 1) as numeric) as minutes_waited,

        -- SLA and latency alert
        players_expected,
        players_predicted,
        is_complete and last_predicted_at <= sla_deadline_at as is_sla_met,
        case
            when phase4_ready_at is null then 'ok'
            when minutes_waited > {{ var('latency_critical_minutes') }} then 'critical'
            when minutes_waited > {{ var('latency_warning_minutes') }} then 'warning'
            else 'ok'
        end as latency_alert_level,

        -- the thresholds applied, for the messages that quote them
        cast({{ var('latency_warning_minutes') }} as int64) as latency_warning_minutes,
        cast({{ var('latency_critical_minutes') }} as int64) as latency_critical_minutes

    from joined

)

select * from final
