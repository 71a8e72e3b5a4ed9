// Any test may import aws-local-stepfunctions directly; it needs Promise.withResolvers on Node.js 20.
import './promise-with-resolvers';

// The AWS SDK warns once per process that its 2027 releases will need Node.js 22. The Lambdas run
// on a current runtime in AWS; on a Node.js 20 development machine the warning is only noise.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
