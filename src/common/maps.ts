/** Small helpers for Maps of lists (orders per SDS, replicas per chunk). */

/** Appends `value` to the list under `key`, making the list when it is the first. */
export function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  let list = map.get(key);
  if (list === undefined) {
    list = [];
    map.set(key, list);
  }
  list.push(value);
}
