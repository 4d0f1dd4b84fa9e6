// File I/O on the hugetlbfs backing file: open and check it, read a huge page back around its
// poisoned subpages, punch holes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ras::fileio {

struct FileInfo {
  int fd = -1;
  uint64_t huge_size = 0;
  uint64_t dev = 0, ino = 0;
  uint64_t file_size = 0;
  uint64_t original_size = 0;  // before we grew it
  bool created = false;
};

struct Failure {
  int err = 0;
  const char* syscall = nullptr;
  const char* code = nullptr;  // a project error code instead of an errno, e.g. ERR_NOT_HUGETLBFS
};

// Opens (creating if missing) a file that must be on hugetlbfs and makes it at least `min_size`.
bool OpenHugetlbFile(const std::string& path, uint64_t min_size, FileInfo* out, Failure* fail);

struct ReadBack {
  uint64_t bytes = 0;              // healthy bytes read
  uint32_t calls = 0;              // pread calls made
  std::vector<uint32_t> lost;      // 4 KiB subpage indices that failed with EIO
  int err = 0;                     // a failure that is not a lost subpage (or EOF: ENODATA)
};

// Reads [off, off+len) into dst with reads of up to `chunk` bytes. A short read or EIO stops at
// a poisoned subpage: exactly that 4 KiB is recorded lost (and zeroed in dst), and reading goes on.
ReadBack ReadAround(int fd, uint64_t dev, uint64_t ino, uint64_t off, char* dst, uint64_t len, uint64_t chunk,
                    uint32_t first_subpage);

int PunchHole(int fd, uint64_t dev, uint64_t ino, uint64_t off, uint64_t len);

}  // namespace ras::fileio
