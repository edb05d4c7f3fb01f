package origin

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/tileproxy/tileproxy/config"
)

// SessionPolicy returns the inline session policy attached to the
// AssumeRole call for a tileset: GetObject under its prefix and nothing
// else. The effective permissions are the intersection of this and the
// role's own policy, so even a role that can read the whole bucket yields
// credentials that cannot read another tileset's prefix.
func SessionPolicy(bucket, prefix string) string {
	doc := map[string]any{
		"Version": "2012-10-17",
		"Statement": []map[string]any{{
			"Sid":      "TileproxyReadTileset",
			"Effect":   "Allow",
			"Action":   []string{"s3:GetObject"},
			"Resource": []string{"arn:aws:s3:::" + bucket + "/" + prefix + "*"},
		}},
	}
	b, _ := json.Marshal(doc) // a map of strings cannot fail to marshal
	return string(b)
}

// sessionName identifies tileproxy and the tileset in CloudTrail; STS
// allows [\w+=,.@-]{2,64}, which tileset names already satisfy.
func sessionName(tileset string) string {
	n := "tileproxy-" + tileset
	if len(n) > 64 {
		n = n[:64]
	}
	return n
}

// tilesetCredentials returns the credentials tileset t reads with: nil for
// the base credentials when no role applies, else a cached AssumeRole
// provider scoped to t's prefix.
func tilesetCredentials(_ context.Context, cfg *config.Config, t *config.Tileset, awsCfg aws.Config, deps Deps) (aws.CredentialsProvider, error) {
	role := cfg.RoleARN(t)
	if role == "" {
		deps.Logger.Info("tileset reads with the base credentials (no role_arn)", "tileset", t.Name)
		return nil, nil
	}
	stsClient := sts.NewFromConfig(awsCfg, func(o *sts.Options) {
		if cfg.S3.STSEndpoint != "" {
			o.BaseEndpoint = aws.String(cfg.S3.STSEndpoint)
		}
		if deps.HTTPClient != nil {
			o.HTTPClient = deps.HTTPClient
		}
	})
	policy := SessionPolicy(t.Bucket, t.Prefix)
	prov := stscreds.NewAssumeRoleProvider(stsClient, role, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = sessionName(t.Name)
		o.Duration = cfg.S3.SessionDuration.D()
		o.Policy = aws.String(policy)
		if cfg.S3.ExternalID != "" {
			o.ExternalID = aws.String(cfg.S3.ExternalID)
		}
	})
	window := cfg.S3.SessionDuration.D() / 5
	if window > 5*time.Minute {
		window = 5 * time.Minute
	}
	deps.Logger.Info("tileset reads with assumed-role credentials", "tileset", t.Name, "role_arn", role)
	if len(policy) > 2048 {
		return nil, fmt.Errorf("origin: tileset %s: session policy too long for STS", t.Name)
	}
	return aws.NewCredentialsCache(prov, func(o *aws.CredentialsCacheOptions) {
		// Refresh ahead of expiry so no request is ever signed with
		// credentials about to lapse.
		o.ExpiryWindow = window
	}), nil
}
