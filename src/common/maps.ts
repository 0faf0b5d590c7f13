/** Small helpers for Maps of lists and sets (orders per SDS, replicas per chunk, chunks per pool). */

/** Appends `value` to the list under `key`, making the list when it is the first. */
export function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  let list = map.get(key);
  if (list === undefined) {
    list = [];
    map.set(key, list);
  }
  list.push(value);
}

/** Adds `value` to the set under `key`, making the set when it is the first. */
export function addTo<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  let set = map.get(key);
  if (set === undefined) {
    set = new Set();
    map.set(key, set);
  }
  set.add(value);
}
