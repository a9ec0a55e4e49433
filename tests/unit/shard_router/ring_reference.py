#!/usr/bin/env python3
"""Independent reimplementation of the shard_router ring, from its documented
algorithm (shard_router/include/shard_router/ring.h and hash.h) only.

Run by ctest (ring_reference_test): it asks the C++ ring_dump tool for the
owner of many keys under several rings and fails on any difference. That the
two agree is what "documented precisely enough to reimplement" means.

  ring_reference.py --dump PATH_TO_ring_dump     compare against C++
  ring_reference.py --print                      print pinned values for tests
"""
import bisect
import subprocess
import sys

MASK = (1 << 64) - 1
POINTS_PER_WEIGHT = 10


def fnv1a64(data: bytes) -> int:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & MASK
    return h


def mix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & MASK
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & MASK
    h ^= h >> 33
    return h


def hash64(data: bytes) -> int:
    return mix64(fnv1a64(data))


class Ring:
    def __init__(self, shards):  # shards: list of (name, weight)
        shards = sorted(shards)
        points = []
        for idx, (name, weight) in enumerate(shards):
            for i in range(weight * POINTS_PER_WEIGHT):
                points.append((hash64(f"{name}#{i}".encode()), idx))
        points.sort()
        self.names = [n for n, _ in shards]
        self.positions = [p for p, _ in points]
        self.owners = [o for _, o in points]

    def lookup_hash(self, h: int) -> str:
        k = bisect.bisect_left(self.positions, h)
        if k == len(self.positions):
            k = 0
        return self.names[self.owners[k]]

    def lookup(self, key: str) -> str:
        return self.lookup_hash(hash64(key.encode()))


RINGS = [
    [("a", 100), ("b", 100)],
    [("s1", 100), ("s2", 100), ("s3", 100), ("s4", 100)],
    [("s1", 100), ("s2", 100), ("s3", 100), ("s4", 100), ("s5", 100)],
    [("big", 300), ("small", 1), ("mid", 57)],
]


def keys(n):
    return [f"00000000-0000-4000-8000-{i:012x}" for i in range(n)]


def compare(dump):
    failures = 0
    for shards in RINGS:
        ring = Ring(shards)
        spec = ",".join(f"{n}:{w}" for n, w in shards)
        ks = keys(5000)
        out = subprocess.run([dump, spec], input="\n".join(ks) + "\n", capture_output=True,
                             text=True, check=True).stdout.split()
        for k, got in zip(ks, out):
            want = ring.lookup(k)
            if got != want:
                failures += 1
                if failures < 10:
                    print(f"ring {spec}: key {k}: C++ says {got}, reference says {want}")
        if len(out) != len(ks):
            print(f"ring {spec}: C++ printed {len(out)} owners for {len(ks)} keys")
            failures += 1
    print("ring_reference: %s" % ("ok" if failures == 0 else f"{failures} mismatches"))
    return 1 if failures else 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--dump":
        return compare(sys.argv[2])
    if len(sys.argv) == 2 and sys.argv[1] == "--print":
        for s in [b"", b"a", b"foobar", b"a#0", b"s1#999"]:
            print(f"hash64({s!r}) = 0x{hash64(s):016x}  fnv = 0x{fnv1a64(s):016x}")
        ring = Ring(RINGS[0])
        print("first point", hex(ring.positions[0]), ring.names[ring.owners[0]])
        print("last point", hex(ring.positions[-1]), ring.names[ring.owners[-1]])
        for k in keys(6):
            print(k, ring.lookup(k))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
