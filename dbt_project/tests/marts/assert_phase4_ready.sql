{#- The readiness gate. Fails (returns a row) when --vars game_date is a game day
    (a game on the NBA schedule) that is not ready, including a game day with no
    Phase 3 slate. A date with no game passes: Phase 5 has nothing to do. The row's failure_reason quotes the counts
    and the thresholds fct_phase4_readiness applied; when dbt runs the gate, the reason
    is also logged, so that it shows in the console above dbt's "Got 1 result". -#}
{{ config(tags=['readiness_gate'], severity='error') }}

{%- set gate_sql -%}

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
        readiness.games_scheduled,
        readiness.players_expected,
        readiness.players_ready,
        readiness.ready_pct,
        readiness.ready_pct_threshold,
        readiness.ready_count_threshold,
        readiness.critical_ready_count,
        'Phase 4 not ready for '
        || cast(checked_date.game_date as string)
        || ': '
        || case
            when readiness.players_in_slate = 0
                then
                    cast(readiness.games_scheduled as string)
                    || ' games scheduled but no Phase 3 slate for this date'
            else
                cast(readiness.players_ready as string)
                || ' of '
                || cast(readiness.players_expected as string)
                || ' expected players ready; needs '
                || case
                    when readiness.ready_pct_threshold = floor(readiness.ready_pct_threshold)
                        then cast(cast(readiness.ready_pct_threshold as int64) as string)
                    else cast(readiness.ready_pct_threshold as string)
                end
                || ' % ('
                || cast(
                    cast(
                        ceil(readiness.ready_pct_threshold * readiness.players_expected / 100)
                        as int64
                    ) as string
                )
                || ') or '
                || cast(readiness.ready_count_threshold as string)
                || ' ready'
                || case
                    when readiness.players_ready < readiness.critical_ready_count
                        then
                            '; critical: under '
                            || cast(readiness.critical_ready_count as string)
                            || ' ready'
                    else ''
                end
        end as failure_reason
    from checked_date
    inner join readiness on checked_date.game_date = readiness.game_date
    where readiness.is_game_day and not readiness.is_ready

)

select * from final

{%- endset -%}

{%- if execute and flags.WHICH in ('test', 'build') -%}
    {%- for row in run_query(gate_sql).rows -%}
        {%- do log(row['failure_reason'], info=True) -%}
    {%- endfor -%}
{%- endif %}

{{ gate_sql }}
