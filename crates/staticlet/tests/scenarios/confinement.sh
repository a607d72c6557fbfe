grep -E '^(CapEff|CapBnd|CapPrm|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\t ' ' '
for f in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
  if [ ! -e $f ]; then echo "masked $f absent"
  elif [ -c $f ]; then echo "masked $f yes"
  elif [ -d $f ] && [ -z "$(ls -A $f 2>/dev/null)" ]; then echo "masked $f yes"
  else echo "masked $f no"; fi
done
for m in /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger /sys /sys/fs/cgroup/memory /dev /dev/pts /dev/shm /dev/mqueue /; do
  if [ ! -e $m ]; then echo "mount $m absent"; continue; fi
  awk -v m=$m '$2==m {split($4,o,","); r=o[1]} END {print "mount " m " " (r==""?"none":r)}' /proc/mounts
done
echo "uid_map $(tr -s ' ' < /proc/self/uid_map)"
echo "devices $(cat /sys/fs/cgroup/devices/devices.list 2>/dev/null | tr '\n' ';')"
echo "ping_group_range $(tr '\t' ' ' < /proc/sys/net/ipv4/ping_group_range)"
echo "unprivileged_port_start $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)"
echo done
