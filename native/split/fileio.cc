#include "split/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstring>

#include "linux_compat.h"
#include "simulate/simulate.h"
#include "state/state.h"

namespace ras::fileio {

bool OpenHugetlbFile(const std::string& path, uint64_t min_size, FileInfo* out, Failure* fail) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  bool created = false;
  if (fd < 0 && errno == ENOENT) {
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    created = fd >= 0;
  }
  if (fd < 0) {
    *fail = {errno, "open", nullptr};
    return false;
  }
  struct statfs sfs;
  if (fstatfs(fd, &sfs) != 0) {
    *fail = {errno, "fstatfs", nullptr};
  } else if (static_cast<uint64_t>(sfs.f_type) != HUGETLBFS_MAGIC) {
    *fail = {0, nullptr, "ERR_NOT_HUGETLBFS"};
  } else {
    struct stat st;
    if (fstat(fd, &st) != 0) {
      *fail = {errno, "fstat", nullptr};
    } else if (!S_ISREG(st.st_mode)) {
      *fail = {EINVAL, nullptr, "ERR_NOT_REGULAR_FILE"};
    } else {
      uint64_t size = static_cast<uint64_t>(st.st_size);
      uint64_t original = size;
      if (size < min_size) {
        if (ftruncate(fd, static_cast<off_t>(min_size)) != 0) {
          *fail = {errno, "ftruncate", nullptr};
          goto failed;
        }
        size = min_size;
      }
      *out = {fd, static_cast<uint64_t>(sfs.f_bsize), st.st_dev, st.st_ino, size, original, created};
      return true;
    }
  }
failed:
  close(fd);
  if (created) unlink(path.c_str());
  return false;
}

namespace {
// pread as the kernel would answer it, poison included (real poison: the kernel itself; simulated:
// the simulation clamps the read as Linux >= 6.5 does).
ssize_t Pread(int fd, uint64_t dev, uint64_t ino, char* dst, uint64_t len, uint64_t off) {
  int64_t allowed = simulate::ClampRead(dev, ino, off, len);
  if (allowed < 0) {
    errno = EIO;
    return -1;
  }
  return pread(fd, dst, static_cast<size_t>(allowed), static_cast<off_t>(off));
}
}  // namespace

ReadBack ReadAround(int fd, uint64_t dev, uint64_t ino, uint64_t off, char* dst, uint64_t len, uint64_t chunk,
                    uint32_t first_subpage) {
  ReadBack rb;
  uint64_t pos = 0;
  while (pos < len) {
    uint64_t want = len - pos < chunk ? len - pos : chunk;
    ssize_t n = Pread(fd, dev, ino, dst + pos, want, off + pos);
    rb.calls++;
    if (n > 0) {
      pos += static_cast<uint64_t>(n);
      rb.bytes += static_cast<uint64_t>(n);
      continue;
    }
    if (n == 0) {  // the file ended under us (truncated): nothing more to read back
      rb.err = ENODATA;
      return rb;
    }
    if (errno == EINTR) continue;
    if (errno == EIO || errno == EHWPOISON) {
      uint64_t sub = pos / kSubpage;
      uint64_t sub_start = sub * kSubpage;
      // Bytes of this subpage read before the failure do not count: the subpage is lost whole.
      rb.bytes -= pos - sub_start;
      memset(dst + sub_start, 0, kSubpage);
      rb.lost.push_back(first_subpage + static_cast<uint32_t>(sub));
      pos = sub_start + kSubpage;
      continue;
    }
    rb.err = errno;
    return rb;
  }
  return rb;
}

int PunchHole(int fd, uint64_t dev, uint64_t ino, uint64_t off, uint64_t len) {
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) != 0)
    return errno;
  simulate::ForgetFileRange(dev, ino, off, len);
  return 0;
}

}  // namespace ras::fileio
