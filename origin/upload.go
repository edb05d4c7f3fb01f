package origin

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Upload puts body at bucket/key with the proxy's own credentials and
// verifies it: S3 checks Content-MD5 on the way in, and the stored
// object's ETag (the MD5 of a single-part upload) must be the same
// digest. The audit trail ships its rotated files with it.
func (o *S3) Upload(ctx context.Context, bucket, key string, body []byte) error {
	sum := md5.Sum(body)
	if _, err := o.base.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(bucket),
		Key:           aws.String(key),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentMD5:    aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		ContentType:   aws.String("application/x-ndjson"),
	}); err != nil {
		return classify(ctx, "PutObject", err)
	}
	head, err := o.base.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return classify(ctx, "HeadObject", err)
	}
	if got, want := strings.Trim(aws.ToString(head.ETag), `"`), hex.EncodeToString(sum[:]); got != want || aws.ToInt64(head.ContentLength) != int64(len(body)) {
		return fmt.Errorf("verify s3://%s/%s: stored ETag %s, %d bytes; sent MD5 %s, %d bytes", bucket, key, got, aws.ToInt64(head.ContentLength), want, len(body))
	}
	return nil
}
