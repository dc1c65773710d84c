# Run by `asanlab soak` inside the app's container (docker exec, sh): one block per PHP process.
# /proc/PID/smaps_rollup gives private (USS) and proportional (PSS) memory, so pages a worker
# shares copy-on-write with the master are not counted as its growth. Each open file descriptor is
# listed with what it points to (a path, socket:[inode], pipe:[inode], anon_inode:[eventfd]...);
# the sockets' inodes are resolved from /proc/net (one network namespace for the container).
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  case "${exe##*/}" in php*) ;; *) continue ;; esac
  echo "@process $pid"
  echo "stat $(cat "$d/stat" 2>/dev/null)"
  echo "cmdline $(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)"
  grep -E '^(Rss|Pss|Private_Clean|Private_Dirty|Anonymous):' "$d/smaps_rollup" 2>/dev/null
  grep -E '^(VmRSS|RssAnon|RssFile):' "$d/status" 2>/dev/null
  find "$d/fd" -mindepth 1 -maxdepth 1 -printf 'fd %f %l\n' 2>/dev/null
done
for t in tcp tcp6 udp udp6 unix; do
  echo "@net $t"
  cat "/proc/net/$t" 2>/dev/null
done
echo "@cgroup"
# cgroup v1, then v2
cat /sys/fs/cgroup/memory/memory.usage_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.current 2>/dev/null
