{#- The readiness gate. Fails (returns a row) when --vars game_date is not ready,
    including a date with no slate at all. -#}
{{ config(tags=['readiness_gate'], severity='error') }}

with

checked_date as (

    select {{ game_date_var() }} as game_date

),

readiness as (

    select * from {{ ref('fct_phase4_readiness') }}  -- noqa: PRS

),

final as (

    select
        checked_date.game_date,
        readiness.players_expected,
        readiness.players_ready,
        readiness.ready_pct,
        case
            when readiness.game_date is null then 'no Phase 3 slate for this date'
            else
                'Phase 4 not ready: '
                || cast(readiness.players_ready as string)
                || ' of '
                || cast(readiness.players_expected as string)
                || ' expected players ready'
        end as failure_reason
    from checked_date
    left join readiness on checked_date.game_date = readiness.game_date
    where not coalesce(readiness.is_ready, false)

)

select * from final
