{#- The latest Phase 4 feature row per player and date, whatever its readiness: a
    row Phase 4 rewrote as not production ready makes the player not ready. The
    marts and the reference worker both read features through this model. -#}
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
        game_id,
        features,
        feature_names,
        feature_count,
        feature_version,
        feature_quality_score,
        is_production_ready,
        created_at as features_created_at,
        updated_at as features_updated_at
    from latest
    where row_num = 1

)

select * from final
