//! Quotas: the CPU and memory all the managed services of one group (`group` in the manifest) may
//! ask for together, counting every replica. Pure: a manifest and the quotas in, every problem
//! out, each naming the manifest field to change.

use std::collections::BTreeMap;

use orch_protocol::resources::Resources;

use crate::lifecycle::manifest::Manifest;
use crate::problems::Problem;

/// What the services of each group ask for in all, counting every replica; services in no group
/// are left out.
pub fn usage(manifest: &Manifest) -> BTreeMap<String, Resources> {
    usage_of(manifest.services.values().map(|spec| (spec.group.as_deref(), spec.resources)))
}

/// [`usage`] of services given as (group, resources), e.g. as the stack view shows them.
pub fn usage_of<'a>(
    services: impl IntoIterator<Item = (Option<&'a str>, Option<Resources>)>,
) -> BTreeMap<String, Resources> {
    let mut used: BTreeMap<String, Resources> = BTreeMap::new();
    for (group, resources) in services {
        if let Some(group) = group {
            *used.entry(group.to_string()).or_default() += resources.unwrap_or_default();
        }
    }
    used
}

/// What the units of `manifest` may ask for at the most while it replaces `running` (each
/// running unit's group and resources): a unit replaced by a rolling update (it has an `update`
/// block and runs now) runs its old or its new version, never both, so it counts at the larger of
/// the two in each dimension; every other unit is stopped before its new version starts.
pub fn peak(manifest: &Manifest, running: &BTreeMap<String, Option<Resources>>) -> Manifest {
    let mut peak = manifest.clone();
    for (unit, spec) in peak.services.iter_mut() {
        if spec.update.is_none() {
            continue;
        }
        if let Some(old) = running.get(unit) {
            let (old, new) = (old.unwrap_or_default(), spec.resources.unwrap_or_default());
            let larger = Resources::new(old.cpu.max(new.cpu), old.memory.max(new.memory));
            spec.resources = (!larger.is_zero()).then_some(larger);
        }
    }
    peak
}

/// Every way `manifest` (with its replicas expanded) goes beyond `quotas`: a group over its
/// quota, and a service of a group with a quota that does not say what it asks for (it could
/// otherwise take anything). `running`: the units that run now, with what they ask for; a
/// rolling update may not take a group over its quota midway either ([`peak`]).
pub fn check_rollout(
    manifest: &Manifest,
    running: &BTreeMap<String, Option<Resources>>,
    quotas: &BTreeMap<String, Resources>,
) -> Vec<Problem> {
    let problems = check(manifest, quotas);
    if !problems.is_empty() {
        return problems;
    }
    check(&peak(manifest, running), quotas)
        .into_iter()
        .map(|mut p| {
            p.message = format!(
                "during its rolling update (each replica counted at the larger of its old and new resources): {}",
                p.message
            );
            p
        })
        .collect()
}

/// [`check_rollout`] of a manifest applied with nothing running.
pub fn check(manifest: &Manifest, quotas: &BTreeMap<String, Resources>) -> Vec<Problem> {
    let mut problems = Vec::new();
    // A service's replicas share its entry: one problem per service, not per replica.
    let mut first_of_group: BTreeMap<&str, &str> = BTreeMap::new();
    let mut reported = std::collections::BTreeSet::new();
    for (unit, spec) in &manifest.services {
        let Some(group) = spec.group.as_deref() else { continue };
        let service = manifest.service_of(unit);
        first_of_group.entry(group).or_insert(service);
        if quotas.contains_key(group) && spec.resources.is_none() && reported.insert(service) {
            problems.push(Problem {
                field: format!("services.{service}.resources"),
                line: None,
                message: format!(
                    "required: group {group:?} has a quota, so each of its services says what it asks for"
                ),
            });
        }
    }
    for (group, used) in usage(manifest) {
        let Some(quota) = quotas.get(&group) else { continue };
        if quota.fits(&used) {
            continue;
        }
        let over = used.saturating_sub(quota);
        problems.push(Problem {
            field: format!("services.{}.group", first_of_group[group.as_str()]),
            line: None,
            message: format!(
                "group {group:?} would ask for {used} in all, over its quota of {quota} (by {over}); \
                 ask an admin for more (PUT /api/v1/quotas/{group}) or ask for less"
            ),
        });
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text).unwrap()
    }

    const BATCH: &str = r#"
[services.worker]
command = "w"
group = "batch"
count = 3
resources = { cpu = 500, memory = 256 }
[services.cron]
command = "c"
group = "batch"
resources = { cpu = 250, memory = 128 }
[services.api]
command = "a"
resources = { cpu = 4000 }
"#;

    #[test]
    fn usage_counts_every_replica_of_the_group() {
        let used = usage(&manifest(BATCH));
        assert_eq!(used.len(), 1, "api is in no group");
        assert_eq!(used["batch"], Resources::new(1750, 896));
    }

    #[test]
    fn a_group_over_its_quota_is_refused_naming_the_totals() {
        let m = manifest(BATCH);
        let fits = BTreeMap::from([("batch".to_string(), Resources::new(2000, 1024))]);
        assert!(check(&m, &fits).is_empty());
        assert!(check(&m, &BTreeMap::new()).is_empty(), "no quota, no limit");
        let tight = BTreeMap::from([("batch".to_string(), Resources::new(1500, 1024))]);
        let problems = check(&m, &tight);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "services.cron.group");
        assert!(problems[0].message.contains("1750 millicores, 896 MiB"), "{}", problems[0].message);
        assert!(problems[0].message.contains("by 250 millicores, 0 MiB"), "{}", problems[0].message);
    }

    #[test]
    fn a_service_of_a_group_with_a_quota_must_say_what_it_asks_for() {
        let text = BATCH.replace("resources = { cpu = 250, memory = 128 }", "");
        let quota = BTreeMap::from([("batch".to_string(), Resources::new(10_000, 10_000))]);
        let problems = check(&manifest(&text), &quota);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "services.cron.resources");
    }

    #[test]
    fn a_rolling_update_counts_each_replica_at_its_larger_version() {
        let old = BATCH.replace("group = \"batch\"", "group = \"batch\"\nupdate = { max_parallel = 1 }");
        let running: BTreeMap<String, Option<Resources>> =
            manifest(&old).services.iter().map(|(n, s)| (n.clone(), s.resources)).collect();
        // CPU moves from the workers to cron: 3 x 500 + 250 before, 3 x 300 + 600 after; midway
        // (cron replaced first, say) 3 x 500 + 600.
        let new = old
            .replace("resources = { cpu = 500, memory = 256 }", "resources = { cpu = 300, memory = 256 }")
            .replace("resources = { cpu = 250, memory = 128 }", "resources = { cpu = 600, memory = 128 }");
        let quota = BTreeMap::from([("batch".to_string(), Resources::new(1800, 1024))]);
        assert!(check(&manifest(&old), &quota).is_empty(), "the old version alone fits: 1750 m");
        assert!(check(&manifest(&new), &quota).is_empty(), "the new version alone fits: 1500 m");
        let problems = check_rollout(&manifest(&new), &running, &quota);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.starts_with("during its rolling update"), "{}", problems[0].message);
        assert!(problems[0].message.contains("2100 millicores, 896 MiB"), "{}", problems[0].message);
        let whole = new.replace("update = { max_parallel = 1 }", "");
        assert!(check_rollout(&manifest(&whole), &running, &quota).is_empty(), "replaced whole: stopped first");
        assert!(check_rollout(&manifest(&new), &BTreeMap::new(), &quota).is_empty(), "nothing runs yet");
    }
}
