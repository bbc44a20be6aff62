#!/usr/bin/env python3
"""CPU time (ns) of a process and all its descendants, from /proc/PID/stat utime + stime.

  proc_cpu.py PID

Unlike summing /proc/PID/task/*/schedstat (what the peers harness does), this counts threads that
have already exited: tinyproxy runs one thread per connection, and each one's time would
otherwise vanish with it. Resolution: one clock tick (10 ms).
"""
import os
import sys

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces


def main():
    root = int(sys.argv[1])
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(stat_fields(entry)[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    todo, total = [root], 0
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            fields = stat_fields(pid)
            total += (int(fields[11]) + int(fields[12])) * TICK_NS  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    print(total)


if __name__ == "__main__":
    main()
