package codec

import (
	"bytes"
	stdflate "compress/flate"
	"fmt"
	"io"
	"testing"

	kflate "github.com/klauspost/compress/flate"
)

// benchJSON returns a pushd-like publication of about n bytes: a JSON
// envelope around repetitive but not constant data.
func benchJSON(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"ch":"room:42","seq":131,"data":{"items":[`)
	for i := 0; b.Len() < n-4; i++ {
		fmt.Fprintf(&b, `{"id":%d,"user":"user-%d","price":%d.%02d,"tags":["a%d","b"]},`, i*7919%10007, i%97, i*31%1000, i%100, i%13)
	}
	b.WriteString("]}}")
	return b.Bytes()
}

// flateImpls are the compressors compared by BenchmarkDeflateCompress; the
// codec uses the one this benchmark favours (see deflate.go).
func flateImpls() []struct {
	name string
	new  func(w io.Writer) (interface {
		io.Writer
		Flush() error
		Reset(io.Writer)
	}, error)
} {
	type fw = interface {
		io.Writer
		Flush() error
		Reset(io.Writer)
	}
	return []struct {
		name string
		new  func(w io.Writer) (fw, error)
	}{
		{"std-l1", func(w io.Writer) (fw, error) { return stdflate.NewWriter(w, 1) }},
		{"std-l6", func(w io.Writer) (fw, error) { return stdflate.NewWriter(w, 6) }},
		{"klauspost-l1", func(w io.Writer) (fw, error) { return kflate.NewWriter(w, 1) }},
		{"klauspost-l5", func(w io.Writer) (fw, error) { return kflate.NewWriter(w, 5) }},
	}
}

func BenchmarkDeflateCompress(b *testing.B) {
	for _, n := range []int{512, 4096, 65536} {
		payload := benchJSON(n)
		for _, impl := range flateImpls() {
			b.Run(fmt.Sprintf("impl=%s/size=%d", impl.name, n), func(b *testing.B) {
				var out bytes.Buffer
				w, err := impl.new(&out)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(payload)))
				b.ReportAllocs()
				for b.Loop() {
					out.Reset()
					w.Reset(&out)
					w.Write(payload)
					w.Flush()
				}
				b.ReportMetric(float64(out.Len())/float64(len(payload)), "ratio")
			})
		}
		b.Run(fmt.Sprintf("impl=klauspost-stateless/size=%d", n), func(b *testing.B) {
			var out bytes.Buffer
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				out.Reset()
				kflate.StatelessDeflate(&out, payload, false, nil)
			}
			b.ReportMetric(float64(out.Len())/float64(len(payload)), "ratio")
		})
		b.Run(fmt.Sprintf("impl=codec/size=%d", n), func(b *testing.B) {
			var c Compressor
			var out []byte
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				out, err = c.Compress(out[:0], payload)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(out))/float64(len(payload)), "ratio")
		})
	}
}

func BenchmarkDeflateDecompress(b *testing.B) {
	for _, n := range []int{512, 4096, 65536} {
		payload := benchJSON(n)
		var c Compressor
		compressed, err := c.Compress(nil, payload)
		if err != nil {
			b.Fatal(err)
		}
		withTail := append(bytes.Clone(compressed), 0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff)
		out := make([]byte, 0, len(payload)+1)
		b.Run(fmt.Sprintf("impl=std/size=%d", n), func(b *testing.B) {
			var src bytes.Reader
			src.Reset(withTail)
			r := stdflate.NewReader(&src)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(withTail)
				r.(stdflate.Resetter).Reset(&src, nil)
				got, err := readAllInto(r, out[:0])
				if err != nil || len(got) != len(payload) {
					b.Fatalf(
						"std inflate: %d bytes, %v",
						len(got), err)
				}
			}
		})
		b.Run(fmt.Sprintf("impl=klauspost/size=%d", n), func(b *testing.B) {
			var src bytes.Reader
			src.Reset(withTail)
			r := kflate.NewReader(&src)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(withTail)
				r.(kflate.Resetter).Reset(&src, nil)
				got, err := readAllInto(r, out[:0])
				if err != nil || len(got) != len(payload) {
					b.Fatalf(
						"klauspost inflate: %d bytes, %v",
						len(got), err)
				}
			}
		})
		b.Run(fmt.Sprintf("impl=codec/size=%d", n), func(b *testing.B) {
			var d Decompressor
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				got, err := d.Decompress(out[:0], compressed, 1<<20)
				if err != nil || len(got) != len(payload) {
					b.Fatalf(
						"codec inflate: %d bytes, %v",
						len(got), err)
				}
			}
		})
	}
}

// readAllInto reads r to EOF into dst's spare capacity (no growth).
func readAllInto(r io.Reader, dst []byte) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			return dst, fmt.Errorf("buffer full")
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
