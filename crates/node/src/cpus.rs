//! Which CPU each packet worker runs on: `canopy agent --cpus` in Linux's CPU list form
//! (`0-3,8`, as in `/sys/devices/system/cpu/online`; and `0-7:2` for every second one,
//! as `taskset -c` takes it), checked against
//! the CPUs this process may use, and the pinning of a worker's thread to its CPU.
//!
//! Without `--cpus` the workers are not pinned: on a machine shared with the VMs' own
//! vCPUs (or, in the lab, with every other host's agent) the scheduler places them best.
//! A host that reserves cores for its data path names them, and each worker then keeps
//! its core's caches, as DPDK's lcores or Andromeda's dedicated engine cores do.

use std::io;

/// The CPUs of a list such as `0-3,8`, in the order given.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let num = |t: &str| {
            let c = t
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{t:?} in {s:?} is not a CPU number"))?;
            // Checked before a range is expanded: 0-18446744073709551615 is no list.
            if c >= libc::CPU_SETSIZE as usize {
                return Err(format!(
                    "CPU {c} in {s:?}: CPUs are numbered below {}",
                    libc::CPU_SETSIZE
                ));
            }
            Ok(c)
        };
        match part.split_once('-') {
            Some((a, rest)) => {
                // A range, with taskset's optional stride: `0-7:2` is 0,2,4,6.
                let (b, step) = match rest.split_once(':') {
                    Some((b, step)) => (
                        b,
                        step.trim()
                            .parse::<usize>()
                            .map_err(|_| format!("stride {step:?} in {s:?} is not a number"))?,
                    ),
                    None => (rest, 1),
                };
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("{part:?} in {s:?}: the range goes backwards"));
                }
                if step == 0 {
                    return Err(format!("{part:?} in {s:?}: a stride of 0"));
                }
                cpus.extend((a..=b).step_by(step));
            }
            None if part.is_empty() => return Err(format!("{s:?}: an empty entry")),
            None => cpus.push(num(part)?),
        }
    }
    Ok(cpus)
}

/// `cpus` in the list form (sorted, runs as ranges): `0-3,8`.
pub fn format_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// The CPUs this process may run on (its affinity mask).
pub fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is the empty set; sched_getaffinity fills at most
    // size_of::<cpu_set_t>() bytes of it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, the set's size.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond the kernel's set size"),
        ));
    }
    // SAFETY: as in `allowed`; CPU_SET writes inside the set (cpu < CPU_SETSIZE), and
    // pid 0 is the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Each worker's CPU (`None`: not pinned) for `--workers workers` (0: as many as CPUs
/// listed, or one per core) and `--cpus`, given the CPUs this process may use. Errors
/// name the flag at fault.
pub fn plan(
    workers: usize,
    cpus: Option<&[usize]>,
    allowed: &[usize],
) -> Result<Vec<Option<usize>>, String> {
    let Some(cpus) = cpus else {
        return Ok(vec![None; crate::agentd::worker_count(workers)]);
    };
    if cpus.is_empty() {
        return Err("--cpus: no CPU listed".into());
    }
    for (i, c) in cpus.iter().enumerate() {
        if !allowed.contains(c) {
            return Err(format!(
                "--cpus: CPU {c} is not one this process may run on ({})",
                format_list(allowed)
            ));
        }
        if cpus[..i].contains(c) {
            return Err(format!(
                "--cpus: CPU {c} is listed twice (one worker per CPU)"
            ));
        }
    }
    if cpus.len() > 64 {
        return Err(format!(
            "--cpus: {} CPUs listed, at most 64 workers",
            cpus.len()
        ));
    }
    if workers != 0 && workers != cpus.len() {
        return Err(format!(
            "--workers {workers} but --cpus lists {} CPUs: one worker runs on each listed \
             CPU (leave --workers at 0)",
            cpus.len()
        ));
    }
    Ok(cpus.iter().map(|&c| Some(c)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them_and_bad_ones_say_why() {
        assert_eq!(parse_list("0").unwrap(), vec![0]);
        assert_eq!(parse_list("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_list(" 4 , 2-3 ").unwrap(), vec![4, 2, 3]);
        assert_eq!(parse_list("0-7:2").unwrap(), vec![0, 2, 4, 6]);
        assert_eq!(parse_list("1-7:3,9").unwrap(), vec![1, 4, 7, 9]);
        for (bad, says) in [
            ("", "empty"),
            ("1,,2", "empty"),
            ("3-1", "backwards"),
            ("0-7:0", "stride of 0"),
            ("0-7:x", "not a number"),
            ("a", "not a CPU number"),
            ("1-x", "not a CPU number"),
            ("0-18446744073709551615", "numbered below"),
            ("4096", "numbered below"),
        ] {
            let e = parse_list(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert_eq!(format_list(&[8, 0, 1, 2, 3, 5]), "0-3,5,8");
        assert_eq!(format_list(&[1]), "1");
    }

    #[test]
    fn the_plan_gives_one_worker_per_listed_cpu_or_names_the_flag_at_fault() {
        let allowed = [0, 1, 2, 3];
        assert_eq!(plan(2, None, &allowed).unwrap(), vec![None, None]);
        assert_eq!(
            plan(0, Some(&[3, 1]), &allowed).unwrap(),
            vec![Some(3), Some(1)]
        );
        assert_eq!(
            plan(2, Some(&[0, 1]), &allowed).unwrap(),
            vec![Some(0), Some(1)]
        );
        for (workers, cpus, says) in [
            (
                0,
                &[5][..],
                "CPU 5 is not one this process may run on (0-3)",
            ),
            (0, &[1, 1][..], "CPU 1 is listed twice"),
            (3, &[0, 1][..], "--workers 3 but --cpus lists 2 CPUs"),
            (0, &[][..], "no CPU listed"),
        ] {
            let e = plan(workers, Some(cpus), &allowed).unwrap_err();
            assert!(e.contains(says), "{cpus:?}: {e}");
        }
    }

    #[test]
    fn a_pinned_thread_runs_only_on_its_cpu() {
        let mine = allowed().unwrap();
        let cpu = *mine.last().expect("some CPU");
        let seen = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            allowed().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![cpu]);
        // The pinning was the thread's own: this one may still use them all.
        assert_eq!(allowed().unwrap(), mine);
        assert!(pin_current_thread(libc::CPU_SETSIZE as usize).is_err());
    }
}
