/**
 * The benchmark's plots (scripts/mdm-sim/plot.ts): one point per measured scale on a log2 axis,
 * the goal drawn when it fits, labels escaped.
 */
import t from 'tap';
import { plotSvg } from '../../scripts/mdm-sim/plot.js';

t.test('a plot has a point per scale, in order along x, and the goal line', async (t) => {
  const svg = plotSvg({ file: 'x', title: 'time to <fenced>', unit: 's', value: () => 0, goal: 2 }, [
    { x: 1, y: 0.9 },
    { x: 4, y: 5.4 },
    { x: 16, y: 22.7 },
  ]);
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.match(svg, /time to &lt;fenced&gt; \(s\)/, 'the title escaped');
  const polyline = /<polyline [^>]*points="([^"]+)"/.exec(svg);
  t.ok(polyline !== null, 'a line through the points');
  const points = polyline![1]!.split(' ').map((pair) => pair.split(',').map(Number));
  t.equal(points.length, 3);
  t.ok(points[0]![0]! < points[1]![0]! && points[1]![0]! < points[2]![0]!, 'x grows with capacity');
  t.equal(points[1]![0]! - points[0]![0]!, points[2]![0]! - points[1]![0]!, '1, 4, 16 TiB evenly spaced: a log2 axis');
  t.ok(points[2]![1]! < points[0]![1]!, 'a larger value is drawn higher');
  t.match(svg, /goal 2/, 'the goal drawn');
  t.equal((svg.match(/<circle /g) ?? []).length, 3);
});
