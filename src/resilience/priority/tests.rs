//! Priority tests: the worked examples from Envoy's "Priority levels" page, panic and
//! total panic, failover and failback as health moves, weighted health, level picks,
//! and the local-zone rule.

use super::*;
use proptest::prelude::*;

/// Levels from healthy percentages (of 100 equal endpoints each).
fn levels(healthy: &[u64]) -> Vec<LevelHealth> {
    healthy.iter().map(|&h| LevelHealth::new(h, 100)).collect()
}

fn loads(healthy: &[u64]) -> Vec<u32> {
    priority_loads(&levels(healthy))
}

/// Loads with panic off: the docs' tables show the load algorithm alone.
fn docs_loads(healthy: &[u64]) -> Vec<u32> {
    let cfg = PriorityConfig {
        panic_threshold: 0,
        ..PriorityConfig::default()
    };
    PriorityPlan::compute(&levels(healthy), cfg).loads
}

#[test]
fn envoy_docs_two_levels_with_p1_fully_healthy() {
    for (p0, expected) in [
        (100, [100, 0]),
        (72, [100, 0]),
        (71, [99, 1]),
        (60, [84, 16]),
        (50, [70, 30]),
        (25, [35, 65]),
        (0, [0, 100]),
    ] {
        assert_eq!(loads(&[p0, 100]), expected, "P0 {p0}% healthy");
    }
}

#[test]
fn envoy_docs_two_levels_both_degrading() {
    for (h, expected) in [
        ([100, 100], [100, 0]),
        ([72, 72], [100, 0]),
        ([71, 71], [99, 1]),
        ([50, 50], [70, 30]),
        ([25, 100], [35, 65]),
        ([25, 25], [50, 50]),
    ] {
        assert_eq!(docs_loads(&h), expected, "{h:?}");
    }
}

#[test]
fn envoy_docs_three_levels() {
    for (h, expected) in [
        ([100, 100, 100], [100, 0, 0]),
        ([72, 72, 100], [100, 0, 0]),
        ([71, 71, 100], [99, 1, 0]),
        ([50, 50, 100], [70, 30, 0]),
        ([25, 100, 100], [35, 65, 0]),
        ([25, 25, 100], [35, 35, 30]),
        // The docs' table says 36/36/28, rounding real numbers; Envoy's integer code
        // gives 35/35/28 plus the remainder of 2 to P0, as here.
        ([25, 25, 20], [37, 35, 28]),
    ] {
        assert_eq!(docs_loads(&h), expected, "{h:?}");
    }
    // With the default 50% panic threshold that last case is total panic (every
    // level under half healthy, total health 98): equal-sized levels share equally.
    assert_eq!(loads(&[25, 25, 20]), [34, 33, 33]);
    // Where total health is 100, panic never applies and the tables hold as is.
    assert_eq!(loads(&[25, 25, 100]), [35, 35, 30]);
}

#[test]
fn envoy_docs_normalized_total_health() {
    // Health {20, 30} (1/7 and 3/14 healthy) normalizes to {40, 60} with panic off.
    let l = [LevelHealth::new(1, 7), LevelHealth::new(3, 14)];
    let no_panic = PriorityConfig {
        panic_threshold: 0,
        ..PriorityConfig::default()
    };
    let plan = PriorityPlan::compute(&l, no_panic);
    assert_eq!(
        (plan.loads, plan.panic, plan.total_panic),
        (vec![40, 60], vec![false, false], false)
    );
    // With the default threshold both are under 50% healthy: total panic, loads
    // by size (7 and 14 endpoints: 33 + 66, remainder to P0).
    let plan = PriorityPlan::compute(&l, PriorityConfig::default());
    assert_eq!((plan.loads, plan.total_panic), (vec![34, 66], true));
}

#[test]
fn panic_is_per_level_and_never_while_total_health_is_full() {
    let cfg = PriorityConfig::default();
    // P0 30% healthy but P1 makes up the rest: no panic anywhere.
    let plan = PriorityPlan::compute(&levels(&[30, 100]), cfg);
    assert_eq!((plan.loads, plan.panic), (vec![42, 58], vec![false, false]));
    // 10% + 60%: health 14 + 84 = 98 < 100, so P0 (10% < 50%) panics alone.
    let plan = PriorityPlan::compute(&levels(&[10, 60]), cfg);
    assert_eq!(
        (plan.loads, plan.panic, plan.total_panic),
        (vec![15, 85], vec![true, false], false)
    );
    // One level below the threshold: total panic, all its endpoints in play.
    let plan = PriorityPlan::compute(&levels(&[40]), cfg);
    assert_eq!(
        (plan.loads, plan.panic, plan.total_panic),
        (vec![100], vec![true], true)
    );
    // Nothing healthy anywhere: total panic by size.
    let l = [LevelHealth::new(0, 3), LevelHealth::new(0, 1)];
    assert_eq!(PriorityPlan::compute(&l, cfg).loads, [75, 25]);
    // Panic off and nothing healthy: P0 takes the (unroutable) 100.
    let off = PriorityConfig {
        panic_threshold: 0,
        ..cfg
    };
    let plan = PriorityPlan::compute(&l, off);
    assert_eq!((plan.loads, plan.total_panic), (vec![100, 0], false));
}

#[test]
fn failover_and_failback_follow_health_both_ways() {
    // P0 of 10 endpoints loses them one by one, then gets them back.
    let mut down = Vec::new();
    for healthy in (0..=10).rev() {
        down.push(priority_loads(&[
            LevelHealth::new(healthy, 10),
            LevelHealth::new(10, 10),
        ]));
    }
    let p0: Vec<u32> = down.iter().map(|l| l[0]).collect();
    assert_eq!(p0, [100, 100, 100, 98, 84, 70, 56, 42, 28, 14, 0]);
    assert!(down.iter().all(|l| l.iter().sum::<u32>() == 100));
    let mut up = Vec::new();
    for healthy in 0..=10 {
        up.push(priority_loads(&[
            LevelHealth::new(healthy, 10),
            LevelHealth::new(10, 10),
        ]));
    }
    up.reverse();
    assert_eq!(up, down, "failback retraces failover");
    // P1 failing too while P0 is out: P2 takes over.
    let l = levels(&[0, 0, 100]);
    assert_eq!(priority_loads(&l), [0, 0, 100]);
}

#[test]
fn health_is_weighted() {
    // Healthy weight 3 of 4 (75% × 1.4 > 100) keeps all traffic; 1 of 4 does not.
    assert_eq!(
        priority_loads(&[LevelHealth::new(3, 4), LevelHealth::new(1, 1)]),
        [100, 0]
    );
    assert_eq!(
        priority_loads(&[LevelHealth::new(1, 4), LevelHealth::new(1, 1)]),
        [35, 65]
    );
    // Healthy over total (a stale count) is capped, an empty level is unhealthy.
    assert_eq!(
        priority_loads(&[LevelHealth::new(9, 4), LevelHealth::new(0, 0)]),
        [100, 0]
    );
    assert_eq!(
        priority_loads(&[LevelHealth::new(0, 0), LevelHealth::new(5, 5)]),
        [0, 100]
    );
    assert!(priority_loads(&[]).is_empty());
}

#[test]
fn picks_follow_the_loads() {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut hits = [0u32; 3];
    for _ in 0..100_000 {
        hits[pick_level(&[70, 30, 0], &mut rng)] += 1;
    }
    assert!((69_000..71_000).contains(&hits[0]), "{hits:?}");
    assert_eq!(hits[2], 0);
    assert_eq!(pick_level(&[], &mut rng), 0);
    assert_eq!(pick_level(&[0, 0], &mut rng), 0);
    assert_eq!(pick_level(&[0, 5], &mut rng), 1);
    let plan = PriorityPlan::compute(&levels(&[0, 100]), PriorityConfig::default());
    assert_eq!(plan.pick(&mut rng), 1);
}

#[test]
fn the_local_zone_keeps_traffic_while_healthy_and_spills_gradually() {
    let z = ZonePreference::default();
    assert_eq!(z.local_percent(LevelHealth::new(10, 10), 30), 100);
    assert_eq!(z.local_percent(LevelHealth::new(72, 100), 300), 100);
    assert_eq!(z.local_percent(LevelHealth::new(50, 100), 300), 70);
    assert_eq!(z.local_percent(LevelHealth::new(1, 10), 30), 14);
    assert_eq!(z.local_percent(LevelHealth::new(0, 10), 30), 0);
    assert_eq!(z.local_percent(LevelHealth::new(0, 0), 30), 0, "no local endpoints");
    assert_eq!(z.local_percent(LevelHealth::new(2, 2), 5), 0, "cluster too small");
    let always = ZonePreference {
        min_healthy_fraction: 0.0,
        min_endpoints: 0,
    };
    assert_eq!(always.local_percent(LevelHealth::new(1, 100), 1), 100);

    let mut rng = fastrand::Rng::with_seed(8);
    let local = (0..10_000)
        .filter(|_| z.prefer_local(LevelHealth::new(50, 100), 300, &mut rng))
        .count();
    assert!((6_800..7_200).contains(&local), "{local}");
}

proptest! {
    /// Any health, any tuning: loads sum to 100, and a level healthy enough to be
    /// whole after overprovisioning keeps everything the levels above left.
    #[test]
    fn loads_always_sum_to_100(
        l in proptest::collection::vec((0u64..50, 0u64..50), 1..6),
        overprovisioning in 100u32..300,
        panic_threshold in 0u32..=100,
    ) {
        let l: Vec<LevelHealth> = l.into_iter().map(|(h, t)| LevelHealth::new(h, t)).collect();
        let plan = PriorityPlan::compute(&l, PriorityConfig { overprovisioning, panic_threshold });
        prop_assert_eq!(plan.loads.len(), l.len());
        prop_assert_eq!(plan.loads.iter().sum::<u32>(), 100);
        if !plan.total_panic && l[0].health(overprovisioning) == 100 {
            prop_assert_eq!(plan.loads[0], 100);
        }
    }
}
