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

/// Every way `manifest` (with its replicas expanded) goes beyond `quotas`: a group over its
/// quota, and a service of a group with a quota that does not say what it asks for (it could
/// otherwise take anything).
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
}
