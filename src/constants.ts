// The constants TypeScript shares with the native code. They are defined once, in native/ (the
// addon exports them: native/binding/constants.cc); this module only gives them their TS names.
export {
  BUS_MCEERR_AO,
  BUS_MCEERR_AR,
  FaultCode,
  HUGETLBFS_MAGIC,
  SIGBUS,
  SUBPAGE_SIZE as SUBPAGE,
} from './native';
