#!/usr/bin/python3
"""Encodes a remote_write 2.0 request with Google's protobuf runtime and python-snappy.

Usage: remote_write_v2_encode.py GENERATED_DIR < series.json > body.snappy

series.json: a list of {"labels": {name: value}, "samples": [[ts_ms, value], ...],
"type": "counter"|"gauge"|..., "help": str, "unit": str, "exemplars": [[ts_ms, value,
{labels}]], "start": ts_ms, "histograms": [[ts_ms, count, sum]], "extra_labels": [[name,
value]] (appended after the sorted labels, so a name may repeat), "bad_ref": N (a label
whose value refers to symbol N)}; every key but "labels" is optional. GENERATED_DIR holds remote_write_v2_pb2.py, made by
`protoc --python_out=GENERATED_DIR remote_write_v2.proto`.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import remote_write_v2_pb2 as v2  # noqa: E402
import snappy  # noqa: E402


class Symbols:
    def __init__(self):
        self.strings = [""]
        self.index = {"": 0}

    def ref(self, s):
        if s not in self.index:
            self.index[s] = len(self.strings)
            self.strings.append(s)
        return self.index[s]

    def labels(self, labels):
        refs = []
        for name in sorted(labels):
            refs += [self.ref(name), self.ref(labels[name])]
        return refs


def main():
    spec = json.load(sys.stdin)
    symbols = Symbols()
    req = v2.Request()
    for s in spec:
        ts = req.timeseries.add()
        ts.labels_refs.extend(symbols.labels(s["labels"]))
        for name, value in s.get("extra_labels", []):
            ts.labels_refs.extend([symbols.ref(name), symbols.ref(value)])
        if "bad_ref" in s:
            ts.labels_refs.extend([symbols.ref("x"), s["bad_ref"]])
        for t, value in s.get("samples", []):
            ts.samples.add(value=value, timestamp=t, start_timestamp=s.get("start", 0))
        for t, count, total in s.get("histograms", []):
            ts.histograms.add(count_int=count, sum=total, schema=0, timestamp=t)
        for t, value, labels in s.get("exemplars", []):
            e = ts.exemplars.add(value=value, timestamp=t)
            e.labels_refs.extend(symbols.labels(labels))
        if "type" in s:
            ts.metadata.type = v2.Metadata.MetricType.Value("METRIC_TYPE_" + s["type"].upper())
            ts.metadata.help_ref = symbols.ref(s.get("help", ""))
            ts.metadata.unit_ref = symbols.ref(s.get("unit", ""))
    req.symbols.extend(symbols.strings)
    sys.stdout.buffer.write(snappy.compress(req.SerializeToString()))


if __name__ == "__main__":
    main()
