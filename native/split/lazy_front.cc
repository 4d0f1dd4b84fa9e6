// The front half of a lazy recovery (split/lazy.h), on the lane that owns the page: the range in
// place, the touched 4 KiB in, then (after the release) the rest of its piece.
#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "split/lazy.h"
#include "split/lazy_job.h"
#include "split/lazy_uffd.h"
#include "split/numa.h"
#include "split/props.h"
#include "simulate/simulate.h"

namespace ras::lazy {

namespace {
// The lane's front half in progress: Begin put the touched 4 KiB in, AfterRelease does the rest.
thread_local std::shared_ptr<Job> t_front;
thread_local uint64_t t_front_sub = 0;
}  // namespace

bool Begin(Region& r, uint32_t page, const Report& rep, uint64_t t0, recovery::Outcome* out) {
  if (!Accepting() || props::ChosenGuard(r) != HUGETLB_RAS_GUARD_UFFD || r.huge_size < kChunk) return false;
  // Nobody stalls on an action-optional report: the eager path puts the whole page in sooner.
  if (rep.code != BUS_MCEERR_AR) return false;
  uintptr_t target = r.PageAddress(page);
  if (rep.addr < target || rep.addr >= target + r.huge_size) return false;
  // All of the page must be in the file (it may have shrunk): else the eager path refuses it whole.
  struct stat sb;
  uint64_t page_end = r.file_offset + (static_cast<uint64_t>(page + 1) << r.huge_shift);
  if (fstat(r.fd, &sb) != 0 || static_cast<uint64_t>(sb.st_size) < page_end) return false;
  // Locked memory (the region's declared lock, or mlockall(MCL_FUTURE), under which a fresh range
  // comes populated with zeros that no fault would ever replace): the eager path, said in stats().
  if (props::Wanted(r) != props::kUnlocked) {
    props::CountLockedEager();
    return false;
  }
  RegionRef hold = RegionRef::AtSlot(rep.region_slot, rep.region_id);
  if (!hold) return false;
  auto j = std::make_shared<Job>();
  mapping::Failure mf;
  if (!mapping::TakeBlock(r.huge_size, &j->block, &mf)) return false;
  j->r = &r;
  j->ref.emplace(std::move(hold));  // the job holds the region against removal until it is done
  j->region_id = r.id;
  j->page = page;
  j->rep = rep;
  j->dst = target;
  j->size = r.huge_size;
  j->file_off = r.file_offset + (static_cast<uint64_t>(page) << r.huge_shift);
  j->pieces = static_cast<uint32_t>(j->size / kPiece);
  j->piece.reset(new std::atomic<uint8_t>[j->pieces]);
  for (uint32_t p = 0; p < j->pieces; p++) j->piece[p].store(kMissing);
  j->used_reserve = j->block.from_reserve;
  uint32_t touched = static_cast<uint32_t>((rep.addr - target) / kPiece);
  j->piece[touched].store(kFilling);  // this thread's, below
  AddJob(j);  // before any fault can reach the fault thread
  auto undo = [&]() {
    RemoveJob(j);
    mapping::DropBlock(j->block);
    j->ref.reset();
    return false;  // the eager path replaces whatever is at target now; its touchers wait meanwhile
  };
  // The empty replacement is registered off to the side, then one mremap puts it in the huge page's
  // place, registration included (EVENT_REMAP: the mremap returns once the fault thread has read
  // the event). No moment where the range is unregistered or inaccessible: a thread, or KVM for a
  // vCPU, touching it from now on waits in the kernel until its piece is in (a PROT_NONE moment
  // would fail KVM_RUN with EFAULT).
  void* m = mmap(nullptr, j->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return undo();
  if (props::IsLocked(m, j->size)) {  // mlockall(MCL_FUTURE) since the check above: populated, never faults
    munmap(m, j->size);
    props::CountLockedEager();
    return undo();
  }
  madvise(m, j->size, MADV_DONTFORK);  // a VMM that forks must not copy guest RAM
  props::Note(r, false);
  props::MarkLikeRegion(r, static_cast<char*>(m), j->size);
  j->pol = numa::PolicyAt(target);
  numa::PlaceLike(static_cast<char*>(m), j->size, j->pol, numa::HugePageNode(r, page), false);
  if (lazyfd::Register(reinterpret_cast<uintptr_t>(m), j->size)) {
    munmap(m, j->size);
    return undo();
  }
  simulate::Settle();  // a simulated poison that found the page Normal has made its mprotect by now
  if (mremap(m, j->size, j->size, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(target)) == MAP_FAILED) {
    lazyfd::Unregister(reinterpret_cast<uintptr_t>(m), j->size);
    munmap(m, j->size);
    return undo();
  }
  // The 4 KiB the stalled thread touched goes in before it is released (if lost: its marker, and
  // it is recorded for the C API): it runs again without a second wait. The rest of its piece
  // follows right after the release (AfterRelease).
  uint64_t sub = (rep.addr - target) & ~(kSubpage - 1);
  InstallSubpage(*j, sub);
  t_front = j;
  t_front_sub = sub;
  uint64_t now = MonotonicNs();
  j->in_place_ns = now - t0;
  j->released_ns = now;
  out->ok = true;
  out->path = recovery::kPathLazy;
  out->used_reserve = j->used_reserve;
  {
    std::lock_guard<std::mutex> lock(j->mu);
    out->lost = j->lost;
  }
  out->guard = out->lost.empty() ? HUGETLB_RAS_GUARD_NONE : HUGETLB_RAS_GUARD_UFFD;
  out->ns = j->in_place_ns;
  CountLazy();
  return true;
}

void AfterRelease() {
  if (!t_front) return;
  InstallRestOfPiece(*t_front, t_front_sub);
  t_front.reset();
}

}  // namespace ras::lazy
