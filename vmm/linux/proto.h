/* proto.h: what the Linux guest's user space and the reference VMM's Linux mode share.
 * The walker reads RAS_LINUX_PORT_CONTROL (inb, after ioperm) once per heartbeat: 0 = go on,
 * 1 = the VMM asks the guest to stop (the walker prints its last line, /init reboots). */
#ifndef RAS_LINUX_PROTO_H
#define RAS_LINUX_PROTO_H

#define RAS_LINUX_PORT_CONTROL 0x0520
#define RAS_LINUX_CONTROL_RUN 0
#define RAS_LINUX_CONTROL_STOP 1

#endif
