// Internal to split/lazy*.cc: one lazy recovery in progress.
//
// A piece (64 KiB of the huge page at its own address, in the registered replacement) goes
//
//   kMissing --claim by a toucher--> kFilling --read + UFFDIO_COPY (wakes)--> kDone
//       |                                                                       |
//       +--closing (back half)--> kClosed          kDone --closing--> kTaken (moved into the block)
//
// and a kDone piece may be claimed (kFilling) once more to answer a fault on a page dropped since.
// Closing claims every piece with a CAS, so after it nobody fills, drops or zeroes a piece: the
// touchers of kClosed and kTaken pieces wait in the kernel until the block replaces the range, and
// are woken then (UFFDIO_WAKE).
//
// A poison marker goes into a piece only from the thread that claimed it (its fill, or the refill
// of a dropped page), or into a missing piece from the back half's read, whose loss any later
// claimant's read of the file finds too: UFFDIO_COPY overwrites a marker, so nobody may place one
// in a piece another thread is filling.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "split/numa.h"
#include "split/reserve.h"
#include "state/state.h"

namespace ras::lazy {

constexpr uint64_t kPiece = 64ull << 10;  // what a toucher waits for
constexpr uint64_t kChunk = 2ull << 20;   // a THP of the block (collapsed again where touches broke it)

enum PieceState : uint8_t { kMissing = 0, kFilling = 1, kDone = 2, kClosed = 3, kTaken = 4 };

struct Job {
  Region* r = nullptr;
  std::optional<RegionRef> ref;  // holds the region against removal until the job is done
  uint32_t region_id = 0;
  uint32_t page = 0;
  Report rep{};
  uintptr_t dst = 0;            // the huge page's address: the registered replacement lives there
  mapping::Block block;         // pre-faulted memory the whole page is read into, then swapped in
  uint64_t size = 0;
  uint64_t file_off = 0;
  numa::Policy pol;             // the huge page's memory policy, for the range and the block
  uint32_t pieces = 0;
  std::unique_ptr<std::atomic<uint8_t>[]> piece;  // PieceState
  std::atomic<bool> claimed{false};               // a lane runs the back half
  std::atomic<int> err{0};                        // first failure
  const char* err_syscall = nullptr;
  std::mutex mu;                  // guards the fields below
  std::vector<uint32_t> lost;     // subpage indices, as found
  uint32_t reads = 0;
  uint64_t in_place_ns = 0, released_ns = 0, filled_ns = 0;
  uint64_t block_fault_ns = 0;  // ReadBlock faulting a block that did not come from the reserve
  bool used_reserve = false;
  bool in_place_finish = false;   // the block could not be swapped in: the range was filled in place
  int read_err = 0;               // ReadBlock's failure that is not a lost subpage
  uint64_t read_off = 0;          // how far ReadBlock got
};

// Reads piece `p` (claimed: kFilling) from the file and puts it in place: healthy runs with
// UFFDIO_COPY, lost subpages marked lost (recorded) and given a poison marker. Then kDone.
void InstallPiece(Job& j, uint32_t p);
// The front half in two steps: the touched 4 KiB alone (before the release), then the rest of its
// claimed piece (after; a toucher of the rest waits for it in the kernel meanwhile).
void InstallSubpage(Job& j, uint64_t sub);
void InstallRestOfPiece(Job& j, uint64_t sub);
// A thread waits at `addr` (a userfaultfd fault): give it its piece.
void ServeFault(Job& j, uintptr_t addr);
// The back half, on a lane, in two steps. ReadBlock: the whole page into the block (long; the
// touchers of missing pieces are served meanwhile). Close: take the pieces touched so far back
// into it (UFFDIO_MOVE: the guest's writes go with them), mark the lost subpages there, and swap it
// in place of the registered range in one mremap (2 MiB THPs stay whole, nothing registered is
// left), then wake whoever touched meanwhile. Short, and every toucher waits for its end.
// ReadBlock reads up to `budget` bytes more (so that a lane can take new reports in between);
// true when the whole page is read (or a read failed).
bool ReadBlock(Job& j, uint64_t budget);
void Close(Job& j);
// [off, off+len) of a claimed piece from the file into place at dst: healthy runs copied in,
// lost subpages marked. Never a hole that reads as zeros.
void FillRange(Job& j, uint64_t off, uint64_t len);
// Marks subpage `off` (bytes into the page) lost: recorded, a marker at dst where it is missing.
void MarkLost(Job& j, uint64_t off);
void Fail(Job& j, int e, const char* syscall);

// The registry of recoveries in progress (split/lazy.cc): the fault thread finds a fault's job
// there; a job leaves it when its back half is done (waiters on the lazy state's condition wake).
bool Accepting();  // the threads run and the lazy path is enabled
void AddJob(const std::shared_ptr<Job>& j);
void RemoveJob(const std::shared_ptr<Job>& j);
std::shared_ptr<Job> FindJob(uintptr_t addr);
void WaitGone(const std::shared_ptr<Job>& j);
void CountLazy();

extern std::atomic<uint64_t> g_fault_fills, g_taken_back, g_collapsed, g_in_place_finishes;

}  // namespace ras::lazy
