//! How this node enforces the limits services ask for: what the machine offers, found once when
//! the agent starts, and what each start does with it (a cgroup with the limits, a plain process,
//! or a refusal). Finding reads the cgroup file systems; deciding is pure ([`decide`],
//! [`Cgroups::place`]).
//!
//! Usable is cgroup v2 with the `cpu` and `memory` controllers, or v1 with writable `cpu` and
//! `memory` hierarchies. Without either, a start that asks for limits is refused, unless the
//! operator allowed running services without them (`--allow-unlimited`): a limit that is
//! silently not enforced is worse than a refusal.

use std::path::{Path, PathBuf};

use orch_protocol::resources::{Enforcement, Limits};

use super::cgroup::{CgroupSpec, Version};

/// The controllers a limit needs.
const NEEDED: [&str; 2] = ["cpu", "memory"];

/// A cgroup hierarchy as found: where it is mounted, and whether this process may write there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub dir: PathBuf,
    pub writable: bool,
}

/// What the machine offers under the cgroup root: the facts [`decide`] decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub root: PathBuf,
    /// The unified hierarchy (`<root>`, or `<root>/unified` beside v1) with the controllers it
    /// offers (its `cgroup.controllers`).
    pub v2: Option<(Hierarchy, Vec<String>)>,
    /// v1's hierarchies, each where it has its own files (`cpu.cfs_quota_us`, ...), with
    /// symbolic links resolved (`cpu` -> `cpu,cpuacct`).
    pub cpu: Option<Hierarchy>,
    pub memory: Option<Hierarchy>,
    /// v1's cpuacct: where a service's CPU usage is counted (the same directory as cpu where
    /// they are mounted together).
    pub cpuacct: Option<Hierarchy>,
}

impl Found {
    /// Reads what is mounted under `root`.
    pub fn look(root: &Path) -> Found {
        let hierarchy = |dir: PathBuf, marker: &str| -> Option<Hierarchy> {
            if !dir.join(marker).is_file() {
                return None;
            }
            let dir = dir.canonicalize().unwrap_or(dir);
            let writable = writable(&dir);
            Some(Hierarchy { dir, writable })
        };
        let v2 = [root.to_path_buf(), root.join("unified")].into_iter().find_map(|dir| {
            let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
            let found = hierarchy(dir, "cgroup.controllers")?;
            Some((found, controllers.split_whitespace().map(String::from).collect()))
        });
        Found {
            root: root.to_path_buf(),
            v2,
            cpu: hierarchy(root.join("cpu"), "cpu.cfs_quota_us"),
            memory: hierarchy(root.join("memory"), "memory.limit_in_bytes"),
            cpuacct: hierarchy(root.join("cpuacct"), "cpuacct.usage"),
        }
    }
}

/// Whether this process may make directories in `dir` (permissions, and a read-only mount).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: access(2) on a valid C string has no memory effects.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

/// What the agent makes of what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub enforcement: Enforcement,
    /// With v1 or v2: the version and the hierarchies each service gets a cgroup in.
    pub cgroups: Option<(Version, Vec<PathBuf>)>,
    /// What is missing for limits to be enforced (empty when nothing is).
    pub missing: String,
}

/// Decides how limits are enforced from what was found: v2 when it has both controllers and
/// can be written, else v1 when both its hierarchies can, else none (or unlimited when the
/// operator allowed it).
pub fn decide(found: &Found, allow_unlimited: bool) -> Decision {
    if let Some((v2, controllers)) = &found.v2
        && v2.writable
        && NEEDED.iter().all(|c| controllers.iter().any(|have| have == c))
    {
        return Decision {
            enforcement: Enforcement::CgroupV2,
            cgroups: Some((Version::V2, vec![v2.dir.clone()])),
            missing: String::new(),
        };
    }
    if let (Some(cpu), Some(memory)) = (&found.cpu, &found.memory)
        && cpu.writable
        && memory.writable
    {
        // Usage is counted by cpuacct: one more directory per service where it is mounted apart.
        let cpuacct = found.cpuacct.as_ref().filter(|a| a.writable);
        let mut dirs: Vec<PathBuf> = Vec::new();
        for dir in [Some(cpu), Some(memory), cpuacct].into_iter().flatten().map(|h| &h.dir) {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        return Decision {
            enforcement: Enforcement::CgroupV1,
            cgroups: Some((Version::V1, dirs)),
            missing: String::new(),
        };
    }
    unusable(missing(found), allow_unlimited)
}

/// The decision when limits cannot be enforced, for the reason `missing`.
pub fn unusable(missing: String, allow_unlimited: bool) -> Decision {
    let enforcement = if allow_unlimited { Enforcement::Unlimited } else { Enforcement::None };
    Decision { enforcement, cgroups: None, missing }
}

/// Why neither version is usable, one reason per hierarchy looked at.
fn missing(found: &Found) -> String {
    if found.v2.is_none() && found.cpu.is_none() && found.memory.is_none() {
        return format!(
            "no cgroup file system at {} (no cgroup.controllers of v2, no cpu/ or memory/ hierarchy of v1)",
            found.root.display()
        );
    }
    let mut reasons = Vec::new();
    if let Some((v2, controllers)) = &found.v2 {
        let lacking: Vec<&str> = NEEDED.into_iter().filter(|c| !controllers.iter().any(|have| have == c)).collect();
        if !lacking.is_empty() {
            reasons.push(format!("v2 at {} offers no {}", v2.dir.display(), lacking.join(", ")));
        } else if !v2.writable {
            reasons.push(format!("v2 at {} is not writable", v2.dir.display()));
        }
    }
    // A machine with v2 alone has no v1 to speak of.
    let v1 = found.cpu.is_some() || found.memory.is_some() || found.v2.is_none();
    for (name, hierarchy) in [("cpu", &found.cpu), ("memory", &found.memory)].into_iter().filter(|_| v1) {
        match hierarchy {
            None => reasons.push(format!("no v1 {name} hierarchy at {}", found.root.join(name).display())),
            Some(h) if !h.writable => reasons.push(format!("v1 {name} at {} is not writable", h.dir.display())),
            Some(_) => {}
        }
    }
    reasons.join("; ")
}

/// The line the agent logs at its start: what was found and what follows.
pub fn summary(decision: &Decision, root: &Path) -> String {
    match (&decision.cgroups, decision.enforcement) {
        (Some((Version::V2, dirs)), _) => {
            format!("cgroups: v2 (cpu, memory) at {}; limits enforced", dirs[0].display())
        }
        (Some((Version::V1, dirs)), _) => {
            let accounting = if dirs.len() > 2 { ", cpuacct" } else { "" };
            format!("cgroups: v1 (cpu, memory{accounting}) at {}; limits enforced", root.display())
        }
        (None, Enforcement::Unlimited) => format!(
            "cgroups: none usable (no writable cpu or memory controller: {}); services that ask for limits run \
             without them (--allow-unlimited)",
            decision.missing
        ),
        (None, _) => format!(
            "cgroups: none usable (no writable cpu or memory controller: {}); services that ask for limits are \
             refused (--allow-unlimited runs them without)",
            decision.missing
        ),
    }
}

/// Where the cgroups of a node's services live: `<hierarchy>/orch/<node>`.
pub fn node_dir(hierarchy: &Path, node: &str) -> PathBuf {
    hierarchy.join("orch").join(node)
}

/// How a start runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In a cgroup of its own, with its limits (if any).
    Cgroup(CgroupSpec),
    /// A plain process: it asked for no limit, and there are no cgroups here.
    Plain,
    /// Without the limits it asked for: no cgroups here, and the operator allowed that.
    Unenforced,
}

/// How this agent's services get their cgroups, as decided at its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    pub enforcement: Enforcement,
    /// The version and the node's cgroup in each hierarchy (`<hierarchy>/orch/<node>`).
    nodes: Option<(Version, Vec<PathBuf>)>,
    missing: String,
    summary: String,
}

impl Cgroups {
    /// No cgroups (none were looked for): services that ask for limits are refused.
    pub fn unavailable() -> Cgroups {
        let missing = "the agent did not look for cgroups".to_string();
        Cgroups { enforcement: Enforcement::None, nodes: None, summary: format!("cgroups: {missing}"), missing }
    }

    /// Finds what the machine offers under `root` and makes the node's cgroup in each hierarchy
    /// used (on v2 with the controllers enabled down to it). What fails counts as unusable.
    pub fn detect(root: &Path, node: &str, allow_unlimited: bool) -> Cgroups {
        let mut decision = decide(&Found::look(root), allow_unlimited);
        let mut nodes = None;
        if let Some((version, hierarchies)) = &decision.cgroups {
            match prepare(*version, hierarchies, node) {
                Ok(dirs) => nodes = Some((*version, dirs)),
                Err(reason) => decision = unusable(reason, allow_unlimited),
            }
        }
        if nodes.is_none() {
            decision.cgroups = None;
        }
        let summary = summary(&decision, root);
        Cgroups { enforcement: decision.enforcement, nodes, missing: decision.missing, summary }
    }

    /// What was found and what follows, for the log.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The node's cgroup in each hierarchy (none without cgroups).
    pub fn node_dirs(&self) -> &[PathBuf] {
        self.nodes.as_ref().map(|(_, dirs)| dirs.as_slice()).unwrap_or_default()
    }

    /// How a run with `limits` runs (its cgroup named `name`, see [`run_name`]), or why it
    /// cannot (the reason, for the refusal).
    pub fn place(&self, name: &str, limits: &Limits) -> Result<Placement, String> {
        match (&self.nodes, self.enforcement) {
            (Some((version, nodes)), _) => Ok(Placement::Cgroup(CgroupSpec {
                version: *version,
                dirs: nodes.iter().map(|n| n.join(name)).collect(),
                cpu: limits.cpu,
                memory: limits.memory,
            })),
            (None, _) if limits.is_empty() => Ok(Placement::Plain),
            (None, Enforcement::Unlimited) => Ok(Placement::Unenforced),
            (None, _) => Err(format!(
                "this node cannot enforce limits (no writable cpu or memory controller: {}); its agent runs \
                 services that ask for limits only with --allow-unlimited",
                self.missing
            )),
        }
    }
}

/// The name of a run's cgroup: the service and 12 random hex digits, so that it is the run's
/// alone (see `super::cgroup`).
pub fn run_name(service: &str) -> String {
    format!("{service}-{:012x}", fastrand::u64(..) >> 16)
}

/// Removes the node's cgroups (`<hierarchy>/orch/<node>`, and `orch` when no other node has any)
/// where they are empty: for a node that no agent will serve again (`--cleanup`).
pub fn forget_node(root: &Path, node: &str) {
    let Some((_, hierarchies)) = decide(&Found::look(root), true).cgroups else { return };
    for hierarchy in hierarchies {
        let dir = node_dir(&hierarchy, node);
        if std::fs::remove_dir(&dir).is_ok() {
            let _ = dir.parent().map(std::fs::remove_dir);
        }
    }
}

/// Makes `<hierarchy>/orch/<node>` in each hierarchy; on v2 enables the cpu and memory
/// controllers for the children of each level down to it (a v2 controller reaches a cgroup only
/// through its parent's `cgroup.subtree_control`). Returns the node's directories.
fn prepare(version: Version, hierarchies: &[PathBuf], node: &str) -> Result<Vec<PathBuf>, String> {
    let mut dirs = Vec::new();
    for hierarchy in hierarchies {
        let dir = node_dir(hierarchy, node);
        let levels = [hierarchy.clone(), hierarchy.join("orch"), dir.clone()];
        for (i, level) in levels.iter().enumerate() {
            // Another agent on this machine may make it at the same moment.
            if i > 0
                && let Err(e) = std::fs::create_dir(level)
                && e.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(format!("could not make {}: {e}", level.display()));
            }
            if version == Version::V2 {
                let control = level.join("cgroup.subtree_control");
                std::fs::write(&control, "+cpu +memory")
                    .map_err(|e| format!("could not enable cpu and memory in {}: {e}", control.display()))?;
            }
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dir: &str, writable: bool) -> Option<Hierarchy> {
        Some(Hierarchy { dir: dir.into(), writable })
    }

    fn found() -> Found {
        Found { root: "/sys/fs/cgroup".into(), v2: None, cpu: None, memory: None, cpuacct: None }
    }

    fn v2(controllers: &str, writable: bool) -> Option<(Hierarchy, Vec<String>)> {
        let controllers = controllers.split_whitespace().map(String::from).collect();
        Some((at("/sys/fs/cgroup", writable)?, controllers))
    }

    #[test]
    fn v2_with_both_controllers_wins() {
        let mut f = found();
        f.v2 = v2("cpuset cpu io memory pids", true);
        f.cpu = at("/sys/fs/cgroup/cpu", true);
        f.memory = at("/sys/fs/cgroup/memory", true);
        let d = decide(&f, false);
        assert_eq!(d.enforcement, Enforcement::CgroupV2);
        assert_eq!(d.cgroups, Some((Version::V2, vec![PathBuf::from("/sys/fs/cgroup")])));
        assert_eq!(summary(&d, &f.root), "cgroups: v2 (cpu, memory) at /sys/fs/cgroup; limits enforced");
    }

    #[test]
    fn an_empty_unified_hierarchy_beside_v1_means_v1() {
        let mut f = found();
        f.v2 = Some((at("/sys/fs/cgroup/unified", true).unwrap(), vec![]));
        f.cpu = at("/sys/fs/cgroup/cpu", true);
        f.memory = at("/sys/fs/cgroup/memory", true);
        f.cpuacct = at("/sys/fs/cgroup/cpuacct", true);
        let d = decide(&f, false);
        assert_eq!(d.enforcement, Enforcement::CgroupV1);
        let dirs = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpuacct"].map(PathBuf::from);
        assert_eq!(d.cgroups, Some((Version::V1, dirs.to_vec())));
        assert_eq!(summary(&d, &f.root), "cgroups: v1 (cpu, memory, cpuacct) at /sys/fs/cgroup; limits enforced");

        // cpu and cpuacct mounted together: one directory for both.
        f.cpu = at("/sys/fs/cgroup/cpu,cpuacct", true);
        f.cpuacct = at("/sys/fs/cgroup/cpu,cpuacct", true);
        let d = decide(&f, false);
        assert_eq!(d.cgroups.unwrap().1.len(), 2);
    }

    #[test]
    fn nothing_usable_names_what_is_missing() {
        let mut f = found();
        f.v2 = Some((at("/sys/fs/cgroup/unified", true).unwrap(), vec!["pids".into()]));
        f.cpu = at("/sys/fs/cgroup/cpu", false);
        let d = decide(&f, false);
        assert_eq!((d.enforcement, &d.cgroups), (Enforcement::None, &None));
        assert_eq!(
            d.missing,
            "v2 at /sys/fs/cgroup/unified offers no cpu, memory; v1 cpu at /sys/fs/cgroup/cpu is not writable; \
             no v1 memory hierarchy at /sys/fs/cgroup/memory"
        );
        assert!(summary(&d, &f.root).ends_with("are refused (--allow-unlimited runs them without)"));
        let d = decide(&f, true);
        assert_eq!(d.enforcement, Enforcement::Unlimited);
        assert!(summary(&d, &f.root).ends_with("run without them (--allow-unlimited)"));

        // A read-only v2 (a container's default mount).
        let mut f = found();
        f.v2 = v2("cpu memory", false);
        assert_eq!(decide(&f, false).missing, "v2 at /sys/fs/cgroup is not writable");
        assert_eq!(
            decide(&found(), false).missing,
            "no cgroup file system at /sys/fs/cgroup (no cgroup.controllers of v2, no cpu/ or memory/ hierarchy of v1)"
        );
    }

    #[test]
    fn each_start_is_placed_by_the_enforcement() {
        let limited = Limits { cpu: Some(100), memory: Some(32) };
        let v1 = Cgroups {
            enforcement: Enforcement::CgroupV1,
            nodes: Some((Version::V1, vec!["/cg/cpu/orch/n1".into(), "/cg/memory/orch/n1".into()])),
            missing: String::new(),
            summary: String::new(),
        };
        let expected = CgroupSpec {
            version: Version::V1,
            dirs: vec!["/cg/cpu/orch/n1/web".into(), "/cg/memory/orch/n1/web".into()],
            cpu: Some(100),
            memory: Some(32),
        };
        assert_eq!(v1.place("web", &limited), Ok(Placement::Cgroup(expected.clone())));
        let unlimited = Placement::Cgroup(CgroupSpec { cpu: None, memory: None, ..expected });
        assert_eq!(v1.place("web", &Limits::default()), Ok(unlimited), "a cgroup, without limits");
        let (a, b) = (run_name("web"), run_name("web"));
        assert!(a.starts_with("web-") && a.len() == "web-".len() + 12 && a != b, "{a} {b}");

        let none = Cgroups { enforcement: Enforcement::None, nodes: None, missing: "no v1 cpu".into(), ..v1.clone() };
        assert_eq!(none.place("web", &Limits::default()), Ok(Placement::Plain));
        let refused = none.place("web", &limited).unwrap_err();
        assert!(refused.contains("no v1 cpu") && refused.contains("--allow-unlimited"), "{refused}");
        let allowed = Cgroups { enforcement: Enforcement::Unlimited, ..none };
        assert_eq!(allowed.place("web", &limited), Ok(Placement::Unenforced));
    }

    #[test]
    fn an_empty_directory_offers_nothing() {
        let dir = std::env::temp_dir().join(format!("orch-cgroups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cgroups = Cgroups::detect(&dir, "n1", false);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cgroups.enforcement, Enforcement::None);
        assert!(cgroups.summary().starts_with("cgroups: none usable (no writable cpu or memory controller: no cgroup"));
        assert!(cgroups.node_dirs().is_empty());
    }
}
