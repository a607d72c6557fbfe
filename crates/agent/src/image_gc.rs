//! Image garbage collection, as kubelet's `images.ImageGCManager`: every
//! [`GC_PERIOD`], when the image store's filesystem is used at or above the high threshold,
//! unused images are removed, least recently used first, until usage is back to the low
//! threshold; images younger than the minimum age are kept, and (when set) images unused for
//! longer than the maximum age are removed whatever the disk usage.
//!
//! An image is in use while any container in the runtime (running or exited, ours or another
//! client's) was made from it, or while a wanted static pod names it (unlike kubelet: a node
//! that imports its images offline must not lose the image of a pod that is not running at
//! the moment, e.g. backing off). The runtime
//! refuses to remove an image in use as well, so a container created between the list and the
//! removal is safe.
//!
//! [`plan`] is pure and table-tested; [`ImageGc`] keeps kubelet's in-memory record of when each
//! image was first seen and last used (lost on restart, as kubelet's), and [`run`] drives it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use staticlet_runtime::{Clock, ContainerRuntime, Image, ImageSpec, LabelSelector};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// kubelet's `ImageGCPeriod`.
pub const GC_PERIOD: Duration = Duration::from_secs(300);

/// kubelet's `imageGCHighThresholdPercent`, `imageGCLowThresholdPercent`, `imageMinimumGCAge`,
/// `imageMaximumGCAge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Usage (percent of the filesystem) at which collection starts; 100 turns it off.
    pub high_percent: u8,
    /// Usage collection brings the filesystem back to.
    pub low_percent: u8,
    /// Images seen for less than this are never removed.
    pub min_age: Duration,
    /// Images unused for longer than this are removed whatever the usage (`None`: off).
    pub max_age: Option<Duration>,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
            max_age: None,
        }
    }
}

impl ImageGcPolicy {
    /// Checks the policy as kubelet's validation does; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.high_percent > 100 {
            return Err(format!(
                "imageGCHighThresholdPercent ({}) must be between 0 and 100",
                self.high_percent
            ));
        }
        if self.low_percent > 100 {
            return Err(format!(
                "imageGCLowThresholdPercent ({}) must be between 0 and 100",
                self.low_percent
            ));
        }
        if self.low_percent >= self.high_percent && self.high_percent != 100 {
            return Err(format!(
                "imageGCLowThresholdPercent ({}) must be less than imageGCHighThresholdPercent ({})",
                self.low_percent, self.high_percent
            ));
        }
        if let Some(max) = self.max_age {
            if max <= self.min_age {
                return Err(format!(
                    "imageMaximumGCAge ({max:?}) must be greater than imageMinimumGCAge ({:?})",
                    self.min_age
                ));
            }
        }
        Ok(())
    }
}

/// The image store's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub capacity: u64,
    pub available: u64,
}

impl DiskUsage {
    /// Of the filesystem holding `path` (`statvfs`).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let st = nix::sys::statvfs::statvfs(path)?;
        let frag = st.fragment_size();
        Ok(Self {
            capacity: st.blocks() * frag,
            available: st.blocks_available() * frag,
        })
    }

    fn used_percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        (self.capacity - self.available.min(self.capacity)) * 100 / self.capacity
    }
}

/// An image as the collector knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub id: String,
    pub size: u64,
    pub first_detected: SystemTime,
    pub last_used: SystemTime,
    pub in_use: bool,
}

/// What one collection does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Image ids to remove, in order.
    pub remove: Vec<String>,
    /// Bytes to free for the low threshold (0 when under the high one).
    pub to_free: u64,
    /// Bytes the planned removals free.
    pub freed: u64,
}

/// Decides what to remove (kubelet's `freeSpace` and `freeOldImages`).
pub fn plan(images: &[Known], usage: DiskUsage, policy: &ImageGcPolicy, now: SystemTime) -> Plan {
    let mut out = Plan::default();
    let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    let mut candidates: Vec<&Known> = images
        .iter()
        .filter(|i| !i.in_use && age(i.first_detected) >= policy.min_age)
        .collect();
    // Least recently used first; then the oldest.
    candidates.sort_by_key(|i| (i.last_used, i.first_detected, i.id.clone()));
    if let Some(max) = policy.max_age {
        candidates.retain(|i| {
            if age(i.last_used) > max {
                out.remove.push(i.id.clone());
                out.freed += i.size;
                false
            } else {
                true
            }
        });
    }
    if policy.high_percent < 100 && usage.used_percent() >= u64::from(policy.high_percent) {
        let keep_free = usage.capacity * (100 - u64::from(policy.low_percent)) / 100;
        out.to_free = keep_free.saturating_sub(usage.available);
        for i in candidates {
            if out.freed >= out.to_free {
                break;
            }
            out.remove.push(i.id.clone());
            out.freed += i.size;
        }
    }
    out
}

/// kubelet's image records between collections.
#[derive(Debug, Default)]
pub struct ImageGc {
    seen: HashMap<String, (SystemTime, SystemTime)>,
}

impl ImageGc {
    /// Updates the records from a list of images and the images in use at `now`; returns them.
    pub fn observe(
        &mut self,
        images: &[Image],
        in_use: &HashSet<String>,
        now: SystemTime,
    ) -> Vec<Known> {
        let mut out = Vec::new();
        let ids: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.seen.retain(|id, _| ids.contains(id.as_str()));
        for img in images {
            let used = in_use.contains(&img.id)
                || img.repo_tags.iter().any(|t| in_use.contains(t))
                || img.repo_digests.iter().any(|d| in_use.contains(d));
            let e = self.seen.entry(img.id.clone()).or_insert((now, now));
            if used {
                e.1 = now;
            }
            out.push(Known {
                id: img.id.clone(),
                size: img.size,
                first_detected: e.0,
                last_used: e.1,
                in_use: used,
            });
        }
        out
    }

    /// One collection against `runtime`: lists images and containers, plans, removes.
    pub async fn collect(
        &mut self,
        runtime: &dyn ContainerRuntime,
        wanted: &HashSet<String>,
        usage: DiskUsage,
        policy: &ImageGcPolicy,
        now: SystemTime,
    ) -> Result<Plan, String> {
        let images = runtime
            .list_images()
            .await
            .map_err(|e| format!("listing images: {e}"))?;
        let containers = runtime
            .list_containers(&LabelSelector::default())
            .await
            .map_err(|e| format!("listing containers: {e}"))?;
        let mut in_use: HashSet<String> = containers
            .iter()
            .flat_map(|c| [c.image_ref.clone(), c.image.image.clone()])
            .filter(|s| !s.is_empty())
            .collect();
        in_use.extend(wanted.iter().cloned());
        let known = self.observe(&images, &in_use, now);
        let p = plan(&known, usage, policy, now);
        let mut freed = 0;
        let mut removed = Vec::new();
        for id in &p.remove {
            let size = known.iter().find(|k| &k.id == id).map_or(0, |k| k.size);
            match runtime.remove_image(&ImageSpec { image: id.clone() }).await {
                Ok(()) => {
                    info!(image = %id, size, "image garbage collected");
                    freed += size;
                    removed.push(id.clone());
                    self.seen.remove(id);
                }
                Err(e) => {
                    warn!(image = %id, error = %e, "image garbage collection could not remove an image")
                }
            }
        }
        if freed < p.to_free {
            // kubelet's FreeDiskSpaceFailed.
            warn!(
                "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
                p.to_free, freed
            );
        }
        Ok(Plan {
            remove: removed,
            to_free: p.to_free,
            freed,
        })
    }
}

/// Collects every [`GC_PERIOD`] until `stop`, when the runtime has an image store of its own
/// on this machine (the embedded runtime; a CRI runtime collects its own images).
pub async fn run(
    runtime: Arc<dyn ContainerRuntime>,
    desired: tokio::sync::watch::Receiver<Arc<crate::config::merge::DesiredPods>>,
    policy: ImageGcPolicy,
    clock: Clock,
    stop: CancellationToken,
) {
    let Some(dir) = runtime.image_store_dir() else {
        return;
    };
    if policy.high_percent >= 100 && policy.max_age.is_none() {
        info!("image garbage collection is off (imageGCHighThresholdPercent: 100)");
        return;
    }
    let mut gc = ImageGc::default();
    // The first collection one period after start, and only once every pod source has been
    // read: before that, the images of wanted pods are not known yet.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + GC_PERIOD, GC_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !desired.borrow().all_sources_seen {
            continue;
        }
        let usage = match DiskUsage::of(&dir) {
            Ok(u) => u,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "image garbage collection cannot read the disk usage");
                continue;
            }
        };
        let wanted = wanted_images(&desired.borrow());
        // kubelet's ImageGCFailed.
        if let Err(e) = gc
            .collect(runtime.as_ref(), &wanted, usage, &policy, clock.now())
            .await
        {
            warn!(error = %e, "image garbage collection failed");
        }
    }
}

/// The images the wanted pods name (every container, init containers included), as written
/// and in the registry's full form (`busybox` is `docker.io/library/busybox:latest`).
pub fn wanted_images(desired: &crate::config::merge::DesiredPods) -> HashSet<String> {
    let mut out = HashSet::new();
    for pod in desired.pods.values() {
        let spec = pod.spec();
        let names = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.clone());
        for name in names {
            out.insert(full_reference(&name));
            out.insert(name);
        }
    }
    out
}

/// Docker's normalisation of an image reference: the `docker.io` registry and its `library/`
/// namespace for bare names, and the `latest` tag when neither tag nor digest is given.
pub fn full_reference(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_registry =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = match (first.is_empty(), has_registry) {
        (true, _) => format!("docker.io/library/{rest}"),
        (false, true) => name.to_string(),
        (false, false) => format!("docker.io/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !full.contains('@') {
        full.push_str(":latest");
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn img(id: &str, size: u64, first: u64, last: u64, in_use: bool) -> Known {
        Known {
            id: id.into(),
            size,
            first_detected: t(first),
            last_used: t(last),
            in_use,
        }
    }

    #[test]
    fn frees_least_recently_used_unused_images_down_to_the_low_threshold() {
        let policy = ImageGcPolicy::default();
        let images = [
            img("used", 50, 0, 1000, true),
            img("old", 30, 0, 100, false),
            img("older", 40, 0, 50, false),
            img("recent", 30, 0, 900, false),
            img("young", 40, 950, 950, false), // seen 50 s ago: under the 2 min minimum
        ];
        let now = t(1000);
        // 90 % used of 1000 bytes: 200 must be free for 80 %, so 100 more.
        let usage = DiskUsage {
            capacity: 1000,
            available: 100,
        };
        let p = plan(&images, usage, &policy, now);
        assert_eq!(p.to_free, 100);
        assert_eq!(p.remove, ["older", "old", "recent"]);
        assert_eq!(p.freed, 100);
        // Under the high threshold: nothing.
        let calm = DiskUsage {
            capacity: 1000,
            available: 151,
        };
        assert_eq!(plan(&images, calm, &policy, now), Plan::default());
        // Exactly at it: collects (kubelet's >=), only as much as needed (50 bytes).
        let at = DiskUsage {
            capacity: 1000,
            available: 150,
        };
        assert_eq!(plan(&images, at, &policy, now).remove, ["older", "old"]);
        // Off at 100 %.
        let off = ImageGcPolicy {
            high_percent: 100,
            ..policy
        };
        assert!(plan(&images, usage, &off, now).remove.is_empty());
    }

    #[test]
    fn maximum_age_removes_long_unused_images_whatever_the_usage() {
        let policy = ImageGcPolicy {
            max_age: Some(Duration::from_secs(600)),
            ..Default::default()
        };
        let images = [
            img("stale", 10, 0, 100, false),
            img("fresh", 10, 0, 900, false),
            img("stale-but-used", 10, 0, 100, true),
        ];
        let calm = DiskUsage {
            capacity: 1000,
            available: 900,
        };
        let p = plan(&images, calm, &policy, t(1000));
        assert_eq!(p.remove, ["stale"]);
    }

    #[test]
    fn policy_validation_names_the_field() {
        let ok = ImageGcPolicy::default();
        assert_eq!(ok.validate(), Ok(()));
        for (p, want) in [
            (
                ImageGcPolicy {
                    high_percent: 101,
                    ..ok
                },
                "imageGCHighThresholdPercent (101)",
            ),
            (
                ImageGcPolicy {
                    low_percent: 90,
                    ..ok
                },
                "imageGCLowThresholdPercent (90) must be less than imageGCHighThresholdPercent (85)",
            ),
            (
                ImageGcPolicy {
                    max_age: Some(Duration::from_secs(60)),
                    ..ok
                },
                "imageMaximumGCAge (60s) must be greater than imageMinimumGCAge (120s)",
            ),
        ] {
            let e = p.validate().unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn references_in_full() {
        for (name, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app:latest"),
            (
                "registry.k8s.io/etcd:3.6.5-0",
                "registry.k8s.io/etcd:3.6.5-0",
            ),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost/x@sha256:abc", "localhost/x@sha256:abc"),
        ] {
            assert_eq!(full_reference(name), want, "{name}");
        }
    }

    #[test]
    fn records_first_seen_and_last_used() {
        let mut gc = ImageGc::default();
        let image = |id: &str, tag: &str| Image {
            id: id.into(),
            repo_tags: vec![tag.into()],
            repo_digests: vec![],
            size: 1,
        };
        let images = [image("sha256:a", "a:1"), image("sha256:b", "b:1")];
        let used: HashSet<String> = ["a:1".to_string()].into();
        let k = gc.observe(&images, &used, t(10));
        assert!(k[0].in_use && !k[1].in_use);
        let k = gc.observe(&images, &HashSet::new(), t(20));
        assert_eq!((k[0].first_detected, k[0].last_used), (t(10), t(10)));
        assert_eq!((k[1].first_detected, k[1].last_used), (t(10), t(10)));
        // Gone images are forgotten.
        let k = gc.observe(&images[..1], &HashSet::new(), t(30));
        assert_eq!(k.len(), 1);
        assert_eq!(gc.seen.len(), 1);
    }
}
