#!/usr/bin/python3
"""A filesystem that hangs defender-lite, for docker_block.rs: one empty directory
(FUSE, Debian's python3-fusepy) whose attributes are answered at once to anyone but a
process of the defender-lite executable; that one waits until the test allows it. Bind
mounted into a container, it makes the agent's walk of the container's root hang at a
known point, for as long as the test wants, without timing.

usage: slowfs.py MOUNTPOINT STATE_DIR
Writes STATE_DIR/ready once mounted and STATE_DIR/held when a defender-lite process
waits on it; answers it once STATE_DIR/release exists.
"""
import errno
import os
import stat
import sys
import time

from fusepy import FUSE, FuseOSError, Operations, fuse_get_context

class Slow(Operations):
    def __init__(self, state):
        self.state = state

    def init(self, path):
        open(os.path.join(self.state, "ready"), "w").close()

    def _caller_is_agent(self):
        pid = fuse_get_context()[2]
        try:
            return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "defender-lite"
        except OSError:
            return False

    def getattr(self, path, fh=None):
        if path != "/":
            raise FuseOSError(errno.ENOENT)
        if self._caller_is_agent():
            open(os.path.join(self.state, "held"), "w").close()
            while not os.path.exists(os.path.join(self.state, "release")):
                time.sleep(0.05)
        now = time.time()
        return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_ctime=now, st_mtime=now, st_atime=now)

    def readdir(self, path, fh):
        return [".", ".."]

if __name__ == "__main__":
    mountpoint, state = sys.argv[1], sys.argv[2]
    FUSE(Slow(state), mountpoint, foreground=True, nothreads=False, attr_timeout=0, entry_timeout=0)
