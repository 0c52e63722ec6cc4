# I/O the simulator cannot see, for the replay of drbd-8.4.11-transcript.txt.
# The capture's /proc/drbd counters also move with writes and reads done on the device
# outside DRBD's state machine (mkfs, mount, writing f.txt, umount; some of it between the
# captured commands). Before transcript block STEP (1-based), the replay runs
#   ctmgr-drbd-sim set-stats NODE RES KEY:VALUE...
# Everything else in /proc/drbd (states, roles, disks, oos, resync frames, counter resets
# on up/connect, the resync traffic) comes from the simulator's model.
# STEP NODE  RES COUNTERS
5      node1 r0  al:8
17     node2 r0  nr:267556 dw:529656 al:8
26     node1 r0  ns:267556 dw:267556 dr:262400 al:10
36     node2 r0  dr:156
47     node2 r0  ns:272 dw:529928 al:12
