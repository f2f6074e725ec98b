//! Which filesystems, disks and network devices are reported: the default exclusions of
//! node_exporter 1.5 as packaged by Debian, so the same host yields the same series from
//! either.
//!
//! Filesystem types excluded: autofs, binfmt_misc, bpf, cgroup, cgroup2, configfs,
//! debugfs, devpts, devtmpfs, fusectl, hugetlbfs, iso9660, mqueue, nsfs, overlay, proc,
//! procfs, pstore, rpc_pipefs, securityfs, selinuxfs, squashfs, sysfs, tracefs.
//! Mount points excluded: `/dev`, `/proc`, `/run`, `/sys`, `/mnt`, `/media` and everything
//! below them, and anything strictly below `/var/lib/docker` or
//! `/var/lib/containers/storage`.
//! Network devices excluded: `lo`.
//! Disks excluded: partitions and virtual devices named like `ram0`, `loop3`, `fd0`,
//! `sda1`, `vdb2`, `xvda1`, `nvme0n1p1` (node_exporter's
//! `^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$`).

const IGNORED_FSTYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Whether a mount is left out of `node_filesystem_*`.
pub(super) fn ignore_filesystem(fstype: &str, mountpoint: &str) -> bool {
    if IGNORED_FSTYPES.contains(&fstype) {
        return true;
    }
    let under = |root: &str| mountpoint == root || mountpoint.starts_with(&format!("{root}/"));
    let strictly_under = |root: &str| {
        mountpoint.len() > root.len() + 1 && mountpoint.starts_with(&format!("{root}/"))
    };
    ["/dev", "/proc", "/run", "/sys", "/mnt", "/media"]
        .into_iter()
        .any(under)
        || strictly_under("/var/lib/docker")
        || strictly_under("/var/lib/containers/storage")
}

/// Whether a network device is left out of `node_network_*`.
pub(super) fn ignore_netdev(name: &str) -> bool {
    name == "lo"
}

/// Whether a block device is left out of `node_disk_*`.
pub(super) fn ignore_disk(name: &str) -> bool {
    let digits_from = name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits_from == name.len() {
        return false;
    }
    let prefix = &name[..digits_from];
    if matches!(prefix, "ram" | "loop" | "fd") {
        return true;
    }
    let b = prefix.as_bytes();
    let disk_letter = |p: &[u8]| p.len() == 1 && p[0].is_ascii_lowercase();
    if b.len() >= 3 && b[b.len() - 2] == b'd' && disk_letter(&b[b.len() - 1..]) {
        let head = &prefix[..b.len() - 2];
        if matches!(head, "h" | "s" | "v" | "xv") {
            return true;
        }
    }
    // nvme<digits>n<digits>p
    if let Some(rest) = prefix
        .strip_prefix("nvme")
        .and_then(|r| r.strip_suffix('p'))
        && let Some((ctrl, ns)) = rest.split_once('n')
    {
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        return all_digits(ctrl) && all_digits(ns);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_match_node_exporter_defaults() {
        for kept in ["vda", "sda", "nvme0n1", "zram0", "dm-0", "md0", "mmcblk0"] {
            assert!(!ignore_disk(kept), "{kept} should be kept");
        }
        for dropped in [
            "loop0",
            "ram12",
            "fd0",
            "sda1",
            "vdb2",
            "xvda1",
            "hdc3",
            "nvme0n1p1",
        ] {
            assert!(ignore_disk(dropped), "{dropped} should be ignored");
        }
    }

    #[test]
    fn filesystems_match_node_exporter_defaults() {
        assert!(!ignore_filesystem("ext4", "/"));
        assert!(ignore_filesystem("tmpfs", "/run"));
        assert!(ignore_filesystem("tmpfs", "/mnt/x"));
        assert!(!ignore_filesystem("xfs", "/srv/data"));
        assert!(ignore_filesystem("tmpfs", "/dev/shm"));
        assert!(ignore_filesystem("overlay", "/"));
        assert!(ignore_filesystem("ext4", "/var/lib/docker/volumes/x"));
        assert!(!ignore_filesystem("ext4", "/var/lib/docker"));
        assert!(!ignore_filesystem("ext4", "/device"));
        assert!(ignore_netdev("lo") && !ignore_netdev("eth0"));
    }
}
