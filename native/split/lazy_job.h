// Internal to split/lazy*.cc: one lazy recovery in progress, and how its pieces get filled.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "split/reserve.h"
#include "state/state.h"

namespace ras::lazy {

constexpr uint64_t kPiece = 64ull << 10;  // what a fault fills first
constexpr uint64_t kChunk = 2ull << 20;   // what a filler fills (and moves as one THP)

enum ChunkState : uint8_t { kUntouched = 0, kWhole = 1, kPiecewise = 2 };
enum PieceState : uint8_t { kMissing = 0, kFilling = 1, kDone = 2 };

struct Job {
  Region* r = nullptr;
  std::optional<RegionRef> ref;  // holds the region against removal until the fill is done
  uint32_t region_id = 0;
  uint32_t page = 0;
  Report rep{};
  uintptr_t dst = 0;            // the huge page's address: the registered replacement lives there
  mapping::Block staging;       // pre-faulted memory the pieces are read into, then moved from
  uint64_t size = 0;
  uint64_t file_off = 0;
  uint32_t chunks = 0, pieces = 0, pieces_per_chunk = 0;
  std::unique_ptr<std::atomic<uint8_t>[]> chunk;  // ChunkState
  std::unique_ptr<std::atomic<uint8_t>[]> piece;  // PieceState
  std::atomic<uint32_t> done{0};                  // pieces in place
  std::atomic<uint32_t> next_chunk{0};            // the fillers' cursor for whole chunks
  std::atomic<int> err{0};                        // first failure (the fill then stops)
  const char* err_syscall = nullptr;
  std::mutex mu;                  // guards the fields below
  std::vector<uint32_t> lost;     // subpage indices, as found
  std::vector<uint32_t> premarked;  // lost subpages that got their marker before the move
  uint64_t bytes = 0;
  uint32_t reads = 0;
  uint64_t t0 = 0, in_place_ns = 0, released_ns = 0, filled_ns = 0;
  bool used_reserve = false;
  bool finalizing = false;
};

// Fill claimed pieces [p0, p1) of a piecewise chunk (all kFilling): read, mark losses, move in.
void FillPieces(Job& j, uint32_t p0, uint32_t p1);
// Fill an untouched chunk claimed whole (kWhole): one read, one THP move where nothing is lost.
void FillChunk(Job& j, uint32_t c);
// A thread waits at `addr`: make its piece come first.
void ServeFault(Job& j, uintptr_t addr);
// One unit of background work on `j`; false when nothing is left to claim.
bool FillSome(Job& j);

extern std::atomic<uint64_t> g_fault_fills, g_chunk_moves, g_collapsed, g_move_fallbacks;

}  // namespace ras::lazy
