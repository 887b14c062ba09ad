{#- The latest Phase 4 feature row per player and date. -#}
with

features as (

    select * from {{ ref('stg_nba_predictions__ml_feature_store_v2') }}  -- noqa: PRS

),

latest as (

    select
        *,
        row_number() over (
            partition by game_date, player_lookup
            order by updated_at desc, created_at desc
        ) as row_num
    from features

),

final as (

    select
        game_date,
        player_lookup,
        feature_count,
        feature_quality_score,
        is_production_ready,
        created_at as features_created_at,
        updated_at as features_updated_at
    from latest
    where row_num = 1

)

select * from final
